//! Registration entries in PostgreSQL.

use ironroot_api::entry::{EntrySpec, RegistrationEntry};
use tokio_postgres::types::ToSql;

use super::connect::pg_err;
use super::write::Write;
use super::{decode, encode, readable, Inner};
use crate::store::rules::{check_batch, check_token, new_entries, page_of};
use crate::store::{
    entry_identity_key, validated_spec, BatchResults, Change, EntryFilter, Page, PageRequest,
    StoreError,
};

const FIND_IDENTITY: &str = "SELECT id FROM entries WHERE identity_key = $1";

/// An id that cannot be stored (PostgreSQL text holds no NUL) names no entry.
fn storable(id: &str) -> bool {
    !id.contains('\0')
}

impl Inner {
    pub(super) async fn create_entries(
        &self,
        specs: Vec<EntrySpec>,
    ) -> Result<BatchResults<RegistrationEntry>, StoreError> {
        let candidates = new_entries(specs, &self.trust_domain, ironroot_runtime::unix_now())?;
        if candidates.iter().all(Result::is_err) {
            return Ok(candidates);
        }
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        let find = w.tx.prepare_cached(FIND_IDENTITY).await.map_err(pg_err)?;
        let insert =
            w.tx.prepare_cached(
                "INSERT INTO entries (id, spiffe_id, parent_id, identity_key, data)
                 VALUES ($1, $2, $3, $4, $5::text::jsonb)",
            )
            .await
            .map_err(pg_err)?;
        let mut out = Vec::with_capacity(candidates.len());
        for c in candidates {
            let entry = match c {
                Ok(e) => e,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            let key = entry_identity_key(&entry);
            // Writers are serialized (Write::begin): what this finds, stored
            // or an earlier item of this batch, stays true until commit.
            if let Some(row) =
                w.tx.query_opt(&find, &[&key.as_slice()])
                    .await
                    .map_err(pg_err)?
            {
                out.push(Err(StoreError::DuplicateEntry {
                    existing_id: row.try_get(0).map_err(pg_err)?,
                }));
                continue;
            }
            let data = encode("entry", &entry)?;
            w.tx.execute(
                &insert,
                &[
                    &entry.id,
                    &entry.spec.spiffe_id.to_string(),
                    &entry.spec.parent_id.to_string(),
                    &key.as_slice(),
                    &data,
                ],
            )
            .await
            .map_err(pg_err)?;
            w.changed(Change::EntryPut {
                entry: entry.clone(),
            });
            out.push(Ok(entry));
        }
        let head = w.commit(self.changes_kept).await?;
        self.announce(head);
        Ok(out)
    }

    pub(super) async fn update_entry(
        &self,
        id: &str,
        spec: EntrySpec,
        expected_revision: Option<i64>,
    ) -> Result<RegistrationEntry, StoreError> {
        let spec = validated_spec(spec, &self.trust_domain)?;
        let not_found = || StoreError::EntryNotFound { id: id.to_owned() };
        if !storable(id) {
            return Err(not_found());
        }
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        let Some(row) =
            w.tx.query_opt("SELECT data::text FROM entries WHERE id = $1", &[&id])
                .await
                .map_err(pg_err)?
        else {
            return Err(not_found());
        };
        let old: RegistrationEntry = decode("entry", row.try_get(0).map_err(pg_err)?)?;
        if let Some(expected) = expected_revision {
            if expected != old.revision {
                return Err(StoreError::RevisionMismatch {
                    id: id.to_owned(),
                    expected,
                    actual: old.revision,
                });
            }
        }
        let revision = old
            .revision
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt {
                what: format!("entry {id}"),
                reason: "revision number overflows".into(),
            })?;
        let new = RegistrationEntry::from_spec(old.id.clone(), spec, revision, old.created_at);
        let key = entry_identity_key(&new);
        if key != entry_identity_key(&old) {
            if let Some(row) =
                w.tx.query_opt(FIND_IDENTITY, &[&key.as_slice()])
                    .await
                    .map_err(pg_err)?
            {
                return Err(StoreError::DuplicateEntry {
                    existing_id: row.try_get(0).map_err(pg_err)?,
                });
            }
        }
        let data = encode("entry", &new)?;
        w.tx.execute(
            "UPDATE entries SET spiffe_id = $2, parent_id = $3, identity_key = $4,
                    data = $5::text::jsonb
             WHERE id = $1",
            &[
                &id,
                &new.spec.spiffe_id.to_string(),
                &new.spec.parent_id.to_string(),
                &key.as_slice(),
                &data,
            ],
        )
        .await
        .map_err(pg_err)?;
        w.changed(Change::EntryPut { entry: new.clone() });
        let head = w.commit(self.changes_kept).await?;
        self.announce(head);
        Ok(new)
    }

    pub(super) async fn delete_entries(
        &self,
        ids: Vec<String>,
    ) -> Result<BatchResults<RegistrationEntry>, StoreError> {
        check_batch(ids.len())?;
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        let delete =
            w.tx.prepare_cached("DELETE FROM entries WHERE id = $1 RETURNING data::text")
                .await
                .map_err(pg_err)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let row = match storable(&id) {
                true => w.tx.query_opt(&delete, &[&id]).await.map_err(pg_err)?,
                false => None,
            };
            let Some(row) = row else {
                out.push(Err(StoreError::EntryNotFound { id }));
                continue;
            };
            // An entry that does not decode is still deleted (that is how an
            // operator gets rid of it); its result says what it was.
            out.push(decode("entry", row.try_get(0).map_err(pg_err)?));
            w.changed(Change::EntryDeleted { id });
        }
        let head = w.commit(self.changes_kept).await?;
        self.announce(head);
        Ok(out)
    }

    pub(super) async fn get_entry(
        &self,
        id: &str,
    ) -> Result<Option<RegistrationEntry>, StoreError> {
        if !storable(id) {
            return Ok(None);
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT data::text FROM entries WHERE id = $1")
            .await
            .map_err(pg_err)?;
        match client.query_opt(&stmt, &[&id]).await.map_err(pg_err)? {
            Some(row) => decode("entry", row.try_get(0).map_err(pg_err)?).map(Some),
            None => Ok(None),
        }
    }

    /// The narrowest index the filter allows does the work (`parent_id`,
    /// `spiffe_id`; selectors by JSON containment); the filter itself decides
    /// what is kept, and reading goes on past unreadable rows until the page
    /// is full.
    pub(super) async fn list_entries(
        &self,
        filter: &EntryFilter,
        page: &PageRequest,
    ) -> Result<Page<RegistrationEntry>, StoreError> {
        check_token(page)?;
        let size = page.effective_size();
        let chunk = i64::try_from(size + 1).map_err(|e| StoreError::backend(super::BACKEND, e))?;
        let parent = filter.parent_id.as_ref().map(|p| p.to_string());
        let spiffe = filter.spiffe_id.as_ref().map(|p| p.to_string());
        let selectors = match filter.selectors_superset_of.is_empty() {
            true => None,
            false => Some(encode("selectors", &filter.selectors_superset_of)?),
        };
        let client = self.client().await?;
        let mut cursor = page.after.clone();
        let mut items = Vec::new();
        loop {
            let mut sql = String::from("SELECT id, data::text FROM entries WHERE true");
            let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
            if let Some(p) = &parent {
                params.push(p);
                sql.push_str(&format!(" AND parent_id = ${}", params.len()));
            }
            if let Some(s) = &spiffe {
                params.push(s);
                sql.push_str(&format!(" AND spiffe_id = ${}", params.len()));
            }
            if let Some(s) = &selectors {
                params.push(s);
                let n = params.len();
                sql.push_str(&format!(" AND data->'selectors' @> ${n}::text::jsonb"));
            }
            if let Some(c) = &cursor {
                params.push(c);
                sql.push_str(&format!(" AND id > ${}", params.len()));
            }
            params.push(&chunk);
            sql.push_str(&format!(" ORDER BY id LIMIT ${}", params.len()));
            let stmt = client.prepare_cached(&sql).await.map_err(pg_err)?;
            let rows = client.query(&stmt, &params).await.map_err(pg_err)?;
            let fetched = rows.len();
            for row in rows {
                let id: String = row.try_get(0).map_err(pg_err)?;
                let text: &str = row.try_get(1).map_err(pg_err)?;
                if let Some(e) = readable::<RegistrationEntry>("entry", &id, text) {
                    if filter.matches(&e) {
                        if items.len() == size {
                            return Ok(page_of(items, true, |e| e.id.clone()));
                        }
                        items.push(e);
                    }
                }
                cursor = Some(id);
            }
            if i64::try_from(fetched).unwrap_or(i64::MAX) < chunk {
                return Ok(page_of(items, false, |e| e.id.clone()));
            }
        }
    }

    pub(super) async fn count_entries(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let n: i64 = client
            .query_one("SELECT count(*) FROM entries", &[])
            .await
            .map_err(pg_err)?
            .try_get(0)
            .map_err(pg_err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
