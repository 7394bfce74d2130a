//! Nodes, federated bundles, the CA journal, join tokens, and reading the
//! feed, in PostgreSQL.

use deadpool_postgres::GenericClient;
use ironroot_api::bundle::TrustBundle;
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use serde::de::DeserializeOwned;
use tokio_postgres::IsolationLevel;

use super::connect::pg_err;
use super::write::{revision, Write};
use super::{decode, encode, readable, Inner};
use crate::store::rules::{check_token, page_of};
use crate::store::{
    AttestedNode, Change, ChangeEvent, ChangesSince, Page, PageRequest, Revision, Snapshot,
    StoreError, Unreadable, MAX_CHANGES_PER_READ,
};

impl Inner {
    pub(super) async fn get_attested_node(
        &self,
        id: &SpiffeId,
    ) -> Result<Option<AttestedNode>, StoreError> {
        let client = self.client().await?;
        one(
            &client,
            "SELECT data::text FROM nodes WHERE spiffe_id = $1",
            &id.to_string(),
            "attested node",
        )
        .await
    }

    /// `first_only`: refuse a node already there (`AlreadyAttested`), in the transaction.
    pub(super) async fn record_attestation(
        &self,
        node: &AttestedNode,
        first_only: bool,
    ) -> Result<AttestedNode, StoreError> {
        let key = node.spiffe_id.to_string();
        let mut client = self.client().await?;
        // One serialized write: a ban made concurrently is never overwritten.
        let mut w = Write::begin(&mut client).await?;
        let previous: Option<AttestedNode> = one(
            &w.tx,
            "SELECT data::text FROM nodes WHERE spiffe_id = $1",
            &key,
            "attested node",
        )
        .await?;
        if previous.as_ref().is_some_and(|p| p.banned) {
            return Err(StoreError::Banned { id: key });
        }
        if first_only && previous.is_some() {
            return Err(StoreError::AlreadyAttested { id: key });
        }
        let mut stored = node.clone();
        stored.banned = false;
        if let Some(p) = previous {
            stored.first_attested_at = p.first_attested_at;
        }
        put_node(&w, &stored).await?;
        w.changed(Change::NodePut {
            node: stored.clone(),
        });
        let head = w.commit(self.changes_kept).await?;
        self.announce(head);
        Ok(stored)
    }

    pub(super) async fn set_node_banned(
        &self,
        id: &SpiffeId,
        banned: bool,
    ) -> Result<AttestedNode, StoreError> {
        let key = id.to_string();
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        let Some(mut node) = one::<AttestedNode>(
            &w.tx,
            "SELECT data::text FROM nodes WHERE spiffe_id = $1",
            &key,
            "attested node",
        )
        .await?
        else {
            return Err(StoreError::NodeNotFound { id: key });
        };
        node.banned = banned;
        put_node(&w, &node).await?;
        w.changed(Change::NodePut { node: node.clone() });
        let head = w.commit(self.changes_kept).await?;
        self.announce(head);
        Ok(node)
    }

    pub(super) async fn list_attested_nodes(
        &self,
        page: &PageRequest,
    ) -> Result<Page<AttestedNode>, StoreError> {
        check_token(page)?;
        let size = page.effective_size();
        let chunk = i64::try_from(size + 1).map_err(|e| StoreError::backend(super::BACKEND, e))?;
        let client = self.client().await?;
        let mut cursor = page.after.clone().unwrap_or_default();
        let mut items = Vec::new();
        // Past unreadable rows until the page is full, as for entries.
        loop {
            let rows = client
                .query(
                    "SELECT spiffe_id, data::text FROM nodes WHERE spiffe_id > $1
                     ORDER BY spiffe_id LIMIT $2",
                    &[&cursor, &chunk],
                )
                .await
                .map_err(pg_err)?;
            let fetched = rows.len();
            for row in rows {
                let key: String = row.try_get(0).map_err(pg_err)?;
                let text: &str = row.try_get(1).map_err(pg_err)?;
                if let Some(n) = readable::<AttestedNode>("attested node", &key, text) {
                    if items.len() == size {
                        return Ok(page_of(items, true, |n| n.spiffe_id.to_string()));
                    }
                    items.push(n);
                }
                cursor = key;
            }
            if i64::try_from(fetched).unwrap_or(i64::MAX) < chunk {
                return Ok(page_of(items, false, |n| n.spiffe_id.to_string()));
            }
        }
    }

    pub(super) async fn list_banned_nodes(&self) -> Result<Vec<AttestedNode>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT spiffe_id, data::text FROM nodes WHERE banned ORDER BY spiffe_id",
                &[],
            )
            .await
            .map_err(pg_err)?;
        readable_rows(rows, "attested node")
    }

    pub(super) async fn delete_attested_node(
        &self,
        id: &SpiffeId,
    ) -> Result<Option<AttestedNode>, StoreError> {
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        let Some(row) =
            w.tx.query_opt(
                "DELETE FROM nodes WHERE spiffe_id = $1 RETURNING data::text",
                &[&id.to_string()],
            )
            .await
            .map_err(pg_err)?
        else {
            return Ok(None);
        };
        let old = decode("attested node", row.try_get(0).map_err(pg_err)?)?;
        w.changed(Change::NodeDeleted { id: id.clone() });
        let head = w.commit(self.changes_kept).await?;
        self.announce(head);
        Ok(Some(old))
    }

    /// Writes `bundle`; with `condition`, only if the stored one is still what it holds.
    pub(super) async fn replace_federated_bundle(
        &self,
        condition: Option<Option<&TrustBundle>>,
        bundle: &TrustBundle,
    ) -> Result<(), StoreError> {
        if bundle.trust_domain == self.trust_domain {
            return Err(StoreError::OwnTrustDomain {
                trust_domain: self.trust_domain.to_string(),
            });
        }
        let data = encode("federated bundle", bundle)?;
        let mut client = self.client().await?;
        // The head lock serialises every writer of the database, so the bundle read here
        // is the one this write replaces.
        let mut w = Write::begin(&mut client).await?;
        if let Some(expected) = condition {
            let stored: Option<TrustBundle> = match w
                .tx
                .query_opt(
                    "SELECT data::text FROM federated_bundles WHERE trust_domain = $1",
                    &[&bundle.trust_domain.as_str()],
                )
                .await
                .map_err(pg_err)?
            {
                Some(row) => Some(decode("federated bundle", row.try_get(0).map_err(pg_err)?)?),
                None => None,
            };
            if stored.as_ref() != expected {
                // Dropping `w` rolls the transaction back: nothing written, no event.
                return Err(StoreError::FederatedBundleChanged {
                    trust_domain: bundle.trust_domain.to_string(),
                });
            }
        }
        w.tx.execute(
            "INSERT INTO federated_bundles (trust_domain, data) VALUES ($1, $2::text::jsonb)
             ON CONFLICT (trust_domain) DO UPDATE SET data = excluded.data",
            &[&bundle.trust_domain.as_str(), &data],
        )
        .await
        .map_err(pg_err)?;
        w.changed(Change::BundlePut {
            bundle: bundle.clone(),
        });
        let head = w.commit(self.changes_kept).await?;
        self.announce(head);
        Ok(())
    }

    pub(super) async fn get_federated_bundle(
        &self,
        td: &TrustDomain,
    ) -> Result<Option<TrustBundle>, StoreError> {
        let client = self.client().await?;
        one(
            &client,
            "SELECT data::text FROM federated_bundles WHERE trust_domain = $1",
            &td.as_str(),
            "federated bundle",
        )
        .await
    }

    pub(super) async fn list_federated_bundles(&self) -> Result<Vec<TrustBundle>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT trust_domain, data::text FROM federated_bundles ORDER BY trust_domain",
                &[],
            )
            .await
            .map_err(pg_err)?;
        readable_rows(rows, "federated bundle")
    }

    pub(super) async fn delete_federated_bundle(
        &self,
        td: &TrustDomain,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let mut w = Write::begin(&mut client).await?;
        let deleted =
            w.tx.execute(
                "DELETE FROM federated_bundles WHERE trust_domain = $1",
                &[&td.as_str()],
            )
            .await
            .map_err(pg_err)?;
        if deleted > 0 {
            w.changed(Change::BundleDeleted {
                trust_domain: td.clone(),
            });
        }
        let head = w.commit(self.changes_kept).await?;
        self.announce(head);
        Ok(deleted > 0)
    }

    pub(super) async fn get_ca_journal(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        client
            .query_opt("SELECT journal FROM ca_journal WHERE id = 1", &[])
            .await
            .map_err(pg_err)?
            .map(|row| row.try_get(0).map_err(pg_err))
            .transpose()
    }

    pub(super) async fn replace_ca_journal(
        &self,
        expected: Option<&[u8]>,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        // The head lock serialises every writer of the database, so the journal read here
        // is the one this write replaces.
        let mut w = Write::begin(&mut client).await?;
        let stored: Option<Vec<u8>> =
            w.tx.query_opt("SELECT journal FROM ca_journal WHERE id = 1", &[])
                .await
                .map_err(pg_err)?
                .map(|row| row.try_get(0).map_err(pg_err))
                .transpose()?;
        if stored.as_deref() != expected {
            // Dropping `w` rolls the transaction back: nothing written, no event.
            return Err(StoreError::CaJournalChanged);
        }
        w.tx.execute(
            "INSERT INTO ca_journal (id, journal) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET journal = excluded.journal",
            &[&bytes],
        )
        .await
        .map_err(pg_err)?;
        w.changed(Change::CaJournal);
        let head = w.commit(self.changes_kept).await?;
        self.announce(head);
        Ok(())
    }

    /// Join tokens make no change events: one statement each, no head lock.
    pub(super) async fn put_join_token(
        &self,
        token_hash: &[u8; 32],
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO join_tokens (token_hash, expires_at) VALUES ($1, $2)
                 ON CONFLICT (token_hash) DO UPDATE SET expires_at = excluded.expires_at",
                &[&token_hash.as_slice(), &expires_at],
            )
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    /// Removed as it is read, in one statement: of two servers taking the
    /// same token at once, one gets it.
    pub(super) async fn take_join_token(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<i64>, StoreError> {
        let client = self.client().await?;
        client
            .query_opt(
                "DELETE FROM join_tokens WHERE token_hash = $1 RETURNING expires_at",
                &[&token_hash.as_slice()],
            )
            .await
            .map_err(pg_err)?
            .map(|row| row.try_get(0).map_err(pg_err))
            .transpose()
    }

    /// Events are committed gap-free and in order, so what is visible after
    /// `after` is always a prefix of the history: if its first event is not
    /// `after + 1`, the events in between were pruned.
    pub(super) async fn changes_since(
        &self,
        after: Revision,
        limit: usize,
    ) -> Result<ChangesSince, StoreError> {
        let limit = limit.clamp(1, MAX_CHANGES_PER_READ);
        let client = self.client().await?;
        let from = i64::try_from(after.0).unwrap_or(i64::MAX);
        let stmt = client
            .prepare_cached(
                "SELECT revision, change::text FROM change_events WHERE revision > $1
                 ORDER BY revision LIMIT $2",
            )
            .await
            .map_err(pg_err)?;
        let rows = client
            .query(&stmt, &[&from, &(limit as i64)])
            .await
            .map_err(pg_err)?;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            let revision = revision(row.try_get(0).map_err(pg_err)?)?;
            // An event that does not decode cannot be skipped: a follower
            // would miss the change. It is a corrupt store.
            let change: Change = decode("change event", row.try_get(1).map_err(pg_err)?)?;
            events.push(ChangeEvent { revision, change });
        }
        let next = Revision(after.0.saturating_add(1));
        match events.first() {
            Some(first) if first.revision != next => Ok(ChangesSince::Truncated {
                oldest: first.revision,
            }),
            Some(_) => Ok(ChangesSince::Events(events)),
            None => {
                // Nothing after `after`: fine if it is the head. Behind the
                // head with no event after it, the history is gone. Both read
                // in one statement (one snapshot): a write committing in
                // between is not mistaken for pruning.
                let row = client
                    .query_one(
                        "SELECT (SELECT revision FROM store_head WHERE id = 1),
                                EXISTS (SELECT 1 FROM change_events WHERE revision > $1)",
                        &[&from],
                    )
                    .await
                    .map_err(pg_err)?;
                let head = revision(row.try_get(0).map_err(pg_err)?)?;
                let newer: bool = row.try_get(1).map_err(pg_err)?;
                if head > after && !newer {
                    return Ok(ChangesSince::Truncated {
                        oldest: Revision(head.0 + 1),
                    });
                }
                Ok(ChangesSince::Events(events))
            }
        }
    }

    /// One repeatable-read transaction: everything read is at one revision
    /// (writers are not held up).
    pub(super) async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_err)?;
        let head: i64 = tx
            .query_one("SELECT revision FROM store_head WHERE id = 1", &[])
            .await
            .map_err(pg_err)?
            .try_get(0)
            .map_err(pg_err)?;
        let mut snap = Snapshot {
            revision: revision(head)?,
            ..Snapshot::default()
        };
        let mut unreadable = Vec::new();
        let entries = ("SELECT id, data::text FROM entries ORDER BY id", "entry");
        collect(&tx, entries, &mut snap.entries, &mut unreadable).await?;
        let nodes = (
            "SELECT spiffe_id, data::text FROM nodes ORDER BY spiffe_id",
            "attested node",
        );
        collect(&tx, nodes, &mut snap.nodes, &mut unreadable).await?;
        let bundles = (
            "SELECT trust_domain, data::text FROM federated_bundles ORDER BY trust_domain",
            "federated bundle",
        );
        collect(&tx, bundles, &mut snap.bundles, &mut unreadable).await?;
        tx.commit().await.map_err(pg_err)?;
        snap.unreadable = unreadable;
        Ok(snap)
    }
}

async fn put_node(w: &Write<'_>, node: &AttestedNode) -> Result<(), StoreError> {
    let data = encode("attested node", node)?;
    w.tx.execute(
        "INSERT INTO nodes (spiffe_id, banned, data) VALUES ($1, $2, $3::text::jsonb)
         ON CONFLICT (spiffe_id) DO UPDATE SET banned = excluded.banned, data = excluded.data",
        &[&node.spiffe_id.to_string(), &node.banned, &data],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

/// The one record `sql` selects by `key`, decoded (a record that does not
/// decode is `Corrupt`: the caller asked for it by name).
async fn one<T: DeserializeOwned>(
    client: &impl GenericClient,
    sql: &str,
    key: &(dyn tokio_postgres::types::ToSql + Sync),
    what: &str,
) -> Result<Option<T>, StoreError> {
    match client.query_opt(sql, &[key]).await.map_err(pg_err)? {
        Some(row) => decode(what, row.try_get(0).map_err(pg_err)?).map(Some),
        None => Ok(None),
    }
}

/// `(key, json)` rows decoded, the unreadable ones skipped and logged.
fn readable_rows<T: DeserializeOwned>(
    rows: Vec<tokio_postgres::Row>,
    what: &'static str,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let key: &str = row.try_get(0).map_err(pg_err)?;
        let text: &str = row.try_get(1).map_err(pg_err)?;
        if let Some(t) = readable(what, key, text) {
            out.push(t);
        }
    }
    Ok(out)
}

async fn collect<T: DeserializeOwned>(
    client: &impl GenericClient,
    (sql, what): (&str, &'static str),
    out: &mut Vec<T>,
    unreadable: &mut Vec<Unreadable>,
) -> Result<(), StoreError> {
    for row in client.query(sql, &[]).await.map_err(pg_err)? {
        let key: &str = row.try_get(0).map_err(pg_err)?;
        let text: &str = row.try_get(1).map_err(pg_err)?;
        match serde_json::from_str(text) {
            Ok(t) => out.push(t),
            Err(e) => unreadable.push(Unreadable {
                what,
                key: key.to_owned(),
                reason: e.to_string(),
            }),
        }
    }
    Ok(())
}
