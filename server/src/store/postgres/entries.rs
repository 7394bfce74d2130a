//! Registration entries in PostgreSQL.

use std::collections::HashMap;

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

/// The columns of the rows a batch create inserts, one array each (bound to
/// one `unnest` insert).
#[derive(Default)]
struct NewRows {
    ids: Vec<String>,
    spiffe_ids: Vec<String>,
    parent_ids: Vec<String>,
    identity_keys: Vec<Vec<u8>>,
    data: Vec<String>,
}

impl NewRows {
    fn push(&mut self, entry: &RegistrationEntry, identity_key: Vec<u8>) -> Result<(), StoreError> {
        self.data.push(encode("entry", entry)?);
        self.ids.push(entry.id.clone());
        self.spiffe_ids.push(entry.spec.spiffe_id.to_string());
        self.parent_ids.push(entry.spec.parent_id.to_string());
        self.identity_keys.push(identity_key);
        Ok(())
    }
}

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
        // Set-based: one lookup of every candidate's identity and one insert of
        // the new entries, whatever the batch's size (a round trip per entry
        // capped batch creation at ~1,600 entries/s). Writers are serialized
        // (Write::begin): what the lookup finds stays true until commit.
        let keys: Vec<Vec<u8>> = candidates
            .iter()
            .flatten()
            .map(|e| entry_identity_key(e).to_vec())
            .collect();
        let mut existing: HashMap<Vec<u8>, String> = HashMap::with_capacity(keys.len());
        for row in
            w.tx.query(
                "SELECT identity_key, id FROM entries WHERE identity_key = ANY($1)",
                &[&keys],
            )
            .await
            .map_err(pg_err)?
        {
            existing.insert(
                row.try_get(0).map_err(pg_err)?,
                row.try_get(1).map_err(pg_err)?,
            );
        }
        let mut out = Vec::with_capacity(candidates.len());
        let mut new = NewRows::default();
        for c in candidates {
            let entry = match c {
                Ok(e) => e,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            let key = entry_identity_key(&entry).to_vec();
            // Stored already, or an earlier item of this batch.
            if let Some(existing_id) = existing.get(&key) {
                out.push(Err(StoreError::DuplicateEntry {
                    existing_id: existing_id.clone(),
                }));
                continue;
            }
            existing.insert(key.clone(), entry.id.clone());
            new.push(&entry, key)?;
            w.changed(Change::EntryPut {
                entry: entry.clone(),
            });
            out.push(Ok(entry));
        }
        if !new.ids.is_empty() {
            w.tx.execute(
                "INSERT INTO entries (id, spiffe_id, parent_id, identity_key, data)
                 SELECT id, spiffe_id, parent_id, identity_key, data::jsonb
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[])
                      AS n(id, spiffe_id, parent_id, identity_key, data)",
                &[
                    &new.ids,
                    &new.spiffe_ids,
                    &new.parent_ids,
                    &new.identity_keys,
                    &new.data,
                ],
            )
            .await
            .map_err(pg_err)?;
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
        // One statement for the batch; results in the order asked (an id named
        // twice is deleted once, then not found).
        let wanted: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|id| storable(id))
            .collect();
        let mut deleted: HashMap<String, String> = HashMap::with_capacity(wanted.len());
        for row in
            w.tx.query(
                "DELETE FROM entries WHERE id = ANY($1) RETURNING id, data::text",
                &[&wanted],
            )
            .await
            .map_err(pg_err)?
        {
            deleted.insert(
                row.try_get(0).map_err(pg_err)?,
                row.try_get(1).map_err(pg_err)?,
            );
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(data) = deleted.remove(&id) else {
                out.push(Err(StoreError::EntryNotFound { id }));
                continue;
            };
            // An entry that does not decode is still deleted (that is how an
            // operator gets rid of it); its result says what it was.
            out.push(decode("entry", &data));
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
