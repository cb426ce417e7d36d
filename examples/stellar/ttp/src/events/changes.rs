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
    let mut out: Vec<Change<'_>> = Vec::with_capacity(raw.len());
    for (i, change) in raw.iter().enumerate() {
        let previous = i.checked_sub(1).map(|p| &raw[p]);
        match change {
            LedgerEntryChange::Created(e) | LedgerEntryChange::Restored(e) => out.push(Change {
                pre: None,
                post: Some(e),
            }),
            LedgerEntryChange::Updated(e) => match previous {
                Some(LedgerEntryChange::State(pre)) => out.push(Change {
                    pre: Some(pre),
                    post: Some(e),
                }),
                // Protocol 23 restores an archived entry and then updates it: one change, from
                // the restored value to the updated one.
                Some(LedgerEntryChange::Restored(pre)) => {
                    out.pop();
                    out.push(Change {
                        pre: Some(pre),
                        post: Some(e),
                    });
                }
                _ => out.push(Change {
                    pre: None,
                    post: Some(e),
                }),
            },
            LedgerEntryChange::Removed(_) => match previous {
                Some(LedgerEntryChange::State(pre)) => out.push(Change {
                    pre: Some(pre),
                    post: None,
                }),
                Some(LedgerEntryChange::Restored(pre)) => {
                    out.pop();
                    out.push(Change {
                        pre: Some(pre),
                        post: None,
                    });
                }
                _ => {}
            },
            LedgerEntryChange::State(_) => {}
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::{
        AccountEntry, AccountEntryExt, AccountId, LedgerEntryData, LedgerEntryExt, PublicKey,
        SequenceNumber, Thresholds, Uint256,
    };

    fn account(n: u8, balance: i64) -> LedgerEntry {
        LedgerEntry {
            last_modified_ledger_seq: 1,
            data: LedgerEntryData::Account(AccountEntry {
                account_id: AccountId(PublicKey::PublicKeyTypeEd25519(Uint256([n; 32]))),
                balance,
                seq_num: SequenceNumber(1),
                num_sub_entries: 0,
                inflation_dest: None,
                flags: 0,
                home_domain: Default::default(),
                thresholds: Thresholds([1, 0, 0, 0]),
                signers: Default::default(),
                ext: AccountEntryExt::V0,
            }),
            ext: LedgerEntryExt::V0,
        }
    }

    fn balance(e: Option<&LedgerEntry>) -> Option<i64> {
        match &e?.data {
            LedgerEntryData::Account(a) => Some(a.balance),
            _ => None,
        }
    }

    #[test]
    fn pairs_states_with_updates_and_removals_and_sorts_by_key() {
        let raw = vec![
            LedgerEntryChange::State(account(9, 100)),
            LedgerEntryChange::Updated(account(9, 90)),
            LedgerEntryChange::Created(account(5, 7)),
            LedgerEntryChange::State(account(7, 50)),
            LedgerEntryChange::Removed(account(7, 50).to_key()),
        ];
        let changes = changes_of(&raw);
        let summary: Vec<(Option<i64>, Option<i64>)> = changes
            .iter()
            .map(|c| (balance(c.pre), balance(c.post)))
            .collect();
        // Account keys sort by their key bytes: 5, 7, 9.
        assert_eq!(
            summary,
            vec![(None, Some(7)), (Some(50), None), (Some(100), Some(90))]
        );
        assert!(changes[0].is_created() && changes[1].is_removed());
    }

    #[test]
    fn a_restored_then_updated_entry_is_one_change() {
        let raw = vec![
            LedgerEntryChange::Restored(account(1, 10)),
            LedgerEntryChange::Updated(account(1, 15)),
        ];
        let changes = changes_of(&raw);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (balance(changes[0].pre), balance(changes[0].post)),
            (Some(10), Some(15))
        );
    }
}
