//! Ledger entry changes as pre/post pairs, as upstream's `ingest.GetChangesFromLedgerEntryChanges`.

use stellar_xdr::{LedgerEntry, LedgerEntryChange, Limits, WriteXdr};

/// One entry's change: `pre` is `None` when created, `post` is `None` when removed.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    pub pre: Option<&'a LedgerEntry>,
    pub post: Option<&'a LedgerEntry>,
}

impl<'a> Change<'a> {
    /// The entry as it is after the change, or as it was before a removal.
    pub fn latest(&self) -> Option<&'a LedgerEntry> {
        self.post.or(self.pre)
    }

    /// Created: no state before.
    pub fn is_created(&self) -> bool {
        self.pre.is_none() && self.post.is_some()
    }

    /// Removed: no state after.
    pub fn is_removed(&self) -> bool {
        self.pre.is_some() && self.post.is_none()
    }
}

/// Pairs each `UPDATED`/`REMOVED` with the `STATE` before it and keeps `CREATED` alone, then
/// sorts by ledger key (stable), as upstream does so changes come in a deterministic order.
pub fn changes_of(raw: &[LedgerEntryChange]) -> Vec<Change<'_>> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, change) in raw.iter().enumerate() {
        let previous = || match i.checked_sub(1).map(|p| &raw[p]) {
            Some(LedgerEntryChange::State(e)) | Some(LedgerEntryChange::Restored(e)) => Some(e),
            _ => None,
        };
        match change {
            LedgerEntryChange::Created(e) | LedgerEntryChange::Restored(e) => out.push(Change {
                pre: None,
                post: Some(e),
            }),
            LedgerEntryChange::Updated(e) => out.push(Change {
                pre: previous(),
                post: Some(e),
            }),
            LedgerEntryChange::Removed(_) => {
                if let Some(pre) = previous() {
                    out.push(Change {
                        pre: Some(pre),
                        post: None,
                    });
                }
            }
            LedgerEntryChange::State(_) => {}
        }
    }
    // A restored entry that is then updated appears as RESTORED + UPDATED: keep one change.
    out.dedup_by(|later, earlier| {
        earlier.pre.is_none()
            && later.pre.is_some()
            && earlier.post.map(|e| e as *const _) == later.pre.map(|e| e as *const _)
    });
    if out.len() > 1 {
        let mut keyed: Vec<(Vec<u8>, Change<'_>)> = out
            .into_iter()
            .map(|c| {
                let key = c
                    .latest()
                    .and_then(|e| e.to_key().to_xdr(Limits::none()).ok())
                    .unwrap_or_default();
                (key, c)
            })
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        out = keyed.into_iter().map(|(_, c)| c).collect();
    }
    out
}
