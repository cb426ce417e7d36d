//! Hand-built ledgers for rule tests: just enough XDR for the extractor to read, with tx hashes
//! computed for the test network so results match their envelopes as on a real network.

#![allow(dead_code)]

use stellar_xdr::*;

pub const PASSPHRASE: &str = "Test SDF Network ; September 2015";
pub const CLOSE_TIME: u64 = 1_707_246_039; // 2024-02-06T19:00:39Z

pub fn key(n: u8) -> Uint256 {
    Uint256([n; 32])
}

pub fn account(n: u8) -> AccountId {
    AccountId(PublicKey::PublicKeyTypeEd25519(key(n)))
}

pub fn g(n: u8) -> String {
    account(n).to_string()
}

pub fn muxed(n: u8) -> MuxedAccount {
    MuxedAccount::Ed25519(key(n))
}

pub fn muxed_id(n: u8, id: u64) -> MuxedAccount {
    MuxedAccount::MuxedEd25519(MuxedAccountMed25519 {
        id,
        ed25519: key(n),
    })
}

pub fn credit(code: &str, issuer: u8) -> Asset {
    let mut bytes = [0u8; 4];
    bytes[..code.len()].copy_from_slice(code.as_bytes());
    Asset::CreditAlphanum4(AlphaNum4 {
        asset_code: AssetCode4(bytes),
        issuer: account(issuer),
    })
}

pub fn pool_id(n: u8) -> PoolId {
    PoolId(Hash([n; 32]))
}

pub fn balance_id(n: u8) -> ClaimableBalanceId {
    ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash([n; 32]))
}

pub fn op(source: Option<MuxedAccount>, body: OperationBody) -> Operation {
    Operation {
        source_account: source,
        body,
    }
}

pub fn payment(dest: MuxedAccount, asset: Asset, amount: i64) -> OperationBody {
    OperationBody::Payment(PaymentOp {
        destination: dest,
        asset,
        amount,
    })
}

/// A transaction envelope; `soroban` adds Soroban resources (the resource fee is irrelevant).
pub fn envelope(
    source: MuxedAccount,
    seq: i64,
    memo: Memo,
    ops: Vec<Operation>,
    soroban: bool,
) -> TransactionEnvelope {
    TransactionEnvelope::Tx(TransactionV1Envelope {
        tx: Transaction {
            source_account: source,
            fee: 100 * ops.len() as u32,
            seq_num: SequenceNumber(seq),
            cond: Preconditions::None,
            memo,
            operations: ops.try_into().expect("few ops"),
            ext: if soroban {
                TransactionExt::V1(SorobanTransactionData::default())
            } else {
                TransactionExt::V0
            },
        },
        signatures: VecM::default(),
    })
}

pub fn fee_bump(fee_source: MuxedAccount, inner: TransactionEnvelope) -> TransactionEnvelope {
    let TransactionEnvelope::Tx(inner) = inner else {
        panic!("inner must be a v1 envelope")
    };
    TransactionEnvelope::TxFeeBump(FeeBumpTransactionEnvelope {
        tx: FeeBumpTransaction {
            fee_source,
            fee: 1000,
            inner_tx: FeeBumpTransactionInnerTx::Tx(inner),
            ext: FeeBumpTransactionExt::V0,
        },
        signatures: VecM::default(),
    })
}

pub fn account_entry(n: u8, balance: i64) -> LedgerEntry {
    LedgerEntry {
        last_modified_ledger_seq: 1,
        data: LedgerEntryData::Account(AccountEntry {
            account_id: account(n),
            balance,
            seq_num: SequenceNumber(1),
            num_sub_entries: 0,
            inflation_dest: None,
            flags: 0,
            home_domain: String32::default(),
            thresholds: Thresholds([1, 0, 0, 0]),
            signers: VecM::default(),
            ext: AccountEntryExt::V0,
        }),
        ext: LedgerEntryExt::V0,
    }
}

/// `STATE` then `UPDATED` of an account's balance.
pub fn balance_change(n: u8, before: i64, after: i64) -> Vec<LedgerEntryChange> {
    vec![
        LedgerEntryChange::State(account_entry(n, before)),
        LedgerEntryChange::Updated(account_entry(n, after)),
    ]
}

pub fn cb_entry(id: u8, asset: Asset, amount: i64) -> LedgerEntry {
    LedgerEntry {
        last_modified_ledger_seq: 1,
        data: LedgerEntryData::ClaimableBalance(ClaimableBalanceEntry {
            balance_id: balance_id(id),
            claimants: VecM::default(),
            asset,
            amount,
            ext: ClaimableBalanceEntryExt::V0,
        }),
        ext: LedgerEntryExt::V0,
    }
}

pub fn cb_entry_with_id(id: ClaimableBalanceId, asset: Asset, amount: i64) -> LedgerEntry {
    let mut e = cb_entry(0, asset, amount);
    if let LedgerEntryData::ClaimableBalance(cb) = &mut e.data {
        cb.balance_id = id;
    }
    e
}

/// `STATE` then `REMOVED` of an entry.
pub fn removed(entry: LedgerEntry) -> Vec<LedgerEntryChange> {
    let key = entry.to_key();
    vec![
        LedgerEntryChange::State(entry),
        LedgerEntryChange::Removed(key),
    ]
}

pub fn pool_entry(n: u8, a: Asset, b: Asset, reserve_a: i64, reserve_b: i64) -> LedgerEntry {
    LedgerEntry {
        last_modified_ledger_seq: 1,
        data: LedgerEntryData::LiquidityPool(LiquidityPoolEntry {
            liquidity_pool_id: pool_id(n),
            body: LiquidityPoolEntryBody::LiquidityPoolConstantProduct(
                LiquidityPoolEntryConstantProduct {
                    params: LiquidityPoolConstantProductParameters {
                        asset_a: a,
                        asset_b: b,
                        fee: 30,
                    },
                    reserve_a,
                    reserve_b,
                    total_pool_shares: 1000,
                    pool_shares_trust_line_count: 1,
                },
            ),
        }),
        ext: LedgerEntryExt::V0,
    }
}

/// One transaction as the ledger records it.
pub struct TxSpec {
    pub envelope: TransactionEnvelope,
    pub success: bool,
    pub results: Vec<OperationResult>,
    pub fee_charged: i64,
    pub fee_changes: Vec<LedgerEntryChange>,
    /// Changes per operation (classic meta); defaults to none.
    pub op_changes: Vec<Vec<LedgerEntryChange>>,
    pub tx_changes_after: Vec<LedgerEntryChange>,
    /// Protocol 23+: `postTxApplyFeeProcessing`.
    pub post_apply: Vec<LedgerEntryChange>,
    /// Contract events (meta v3: of the transaction; v4: of operation 0).
    pub contract_events: Vec<ContractEvent>,
}

impl TxSpec {
    pub fn new(envelope: TransactionEnvelope, results: Vec<OperationResultTr>) -> TxSpec {
        TxSpec {
            envelope,
            success: true,
            results: results.into_iter().map(OperationResult::OpInner).collect(),
            fee_charged: 100,
            fee_changes: Vec::new(),
            op_changes: Vec::new(),
            tx_changes_after: Vec::new(),
            post_apply: Vec::new(),
            contract_events: Vec::new(),
        }
    }

    pub fn failed(mut self) -> TxSpec {
        self.success = false;
        self
    }

    /// A copy (XDR values are `Clone`; the spec itself is not, to keep call sites explicit).
    pub fn clone_for_test(&self) -> TxSpec {
        TxSpec {
            envelope: self.envelope.clone(),
            success: self.success,
            results: self.results.clone(),
            fee_charged: self.fee_charged,
            fee_changes: self.fee_changes.clone(),
            op_changes: self.op_changes.clone(),
            tx_changes_after: self.tx_changes_after.clone(),
            post_apply: self.post_apply.clone(),
            contract_events: self.contract_events.clone(),
        }
    }

    pub fn with_op_changes(mut self, changes: Vec<Vec<LedgerEntryChange>>) -> TxSpec {
        self.op_changes = changes;
        self
    }
}

pub fn network_id() -> [u8; 32] {
    stellar_ttp::events::network_id(PASSPHRASE)
}

/// Meta version used by `ledger`: 2 before protocol 20, 3 for 20–22, 4 from 23.
fn meta_for(protocol: u32, spec: &TxSpec, op_count: usize) -> TransactionMeta {
    let ops = |i: usize| {
        spec.op_changes
            .get(i)
            .cloned()
            .unwrap_or_default()
            .try_into()
            .expect("changes")
    };
    let after: LedgerEntryChanges = spec.tx_changes_after.clone().try_into().expect("changes");
    if protocol >= 23 {
        let operations: Vec<OperationMetaV2> = (0..op_count)
            .map(|i| OperationMetaV2 {
                ext: ExtensionPoint::V0,
                changes: ops(i),
                events: if i == 0 {
                    spec.contract_events.clone().try_into().expect("events")
                } else {
                    VecM::default()
                },
            })
            .collect();
        TransactionMeta::V4(TransactionMetaV4 {
            ext: ExtensionPoint::V0,
            tx_changes_before: LedgerEntryChanges::default(),
            operations: if spec.success {
                operations.try_into().expect("ops")
            } else {
                VecM::default()
            },
            tx_changes_after: after,
            soroban_meta: None,
            events: VecM::default(),
            diagnostic_events: VecM::default(),
        })
    } else if protocol >= 20 {
        let operations: Vec<OperationMeta> = (0..op_count)
            .map(|i| OperationMeta { changes: ops(i) })
            .collect();
        TransactionMeta::V3(TransactionMetaV3 {
            ext: ExtensionPoint::V0,
            tx_changes_before: LedgerEntryChanges::default(),
            operations: operations.try_into().expect("ops"),
            tx_changes_after: after,
            soroban_meta: Some(SorobanTransactionMeta {
                ext: SorobanTransactionMetaExt::V0,
                events: spec.contract_events.clone().try_into().expect("events"),
                return_value: ScVal::Void,
                diagnostic_events: VecM::default(),
            }),
        })
    } else {
        let operations: Vec<OperationMeta> = (0..op_count)
            .map(|i| OperationMeta { changes: ops(i) })
            .collect();
        TransactionMeta::V2(TransactionMetaV2 {
            tx_changes_before: LedgerEntryChanges::default(),
            operations: operations.try_into().expect("ops"),
            tx_changes_after: after,
        })
    }
}

/// A ledger of the given protocol (LCM v2 from 23, else v1) holding `txs` in apply order.
pub fn ledger(protocol: u32, seq: u32, txs: Vec<TxSpec>) -> LedgerCloseMeta {
    let network = network_id();
    let mut envelopes = Vec::new();
    let mut processing = Vec::new();
    for spec in &txs {
        let hash = spec.envelope.hash(network).expect("hash");
        let op_count = match &spec.envelope {
            TransactionEnvelope::Tx(e) => e.tx.operations.len(),
            TransactionEnvelope::TxFeeBump(e) => {
                let FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
                inner.tx.operations.len()
            }
            TransactionEnvelope::TxV0(e) => e.tx.operations.len(),
        };
        let results: VecM<OperationResult> = spec.results.clone().try_into().expect("results");
        let result = if matches!(spec.envelope, TransactionEnvelope::TxFeeBump(_)) {
            let inner = InnerTransactionResultPair {
                transaction_hash: Hash([0; 32]),
                result: InnerTransactionResult {
                    fee_charged: spec.fee_charged,
                    result: if spec.success {
                        InnerTransactionResultResult::TxSuccess(results)
                    } else {
                        InnerTransactionResultResult::TxFailed(results)
                    },
                    ext: InnerTransactionResultExt::V0,
                },
            };
            if spec.success {
                TransactionResultResult::TxFeeBumpInnerSuccess(inner)
            } else {
                TransactionResultResult::TxFeeBumpInnerFailed(inner)
            }
        } else if spec.success {
            TransactionResultResult::TxSuccess(results)
        } else {
            TransactionResultResult::TxFailed(results)
        };
        let pair = TransactionResultPair {
            transaction_hash: Hash(hash),
            result: TransactionResult {
                fee_charged: spec.fee_charged,
                result,
                ext: TransactionResultExt::V0,
            },
        };
        envelopes.push(spec.envelope.clone());
        processing.push((
            pair,
            spec.fee_changes.clone(),
            meta_for(protocol, spec, op_count),
            spec.post_apply.clone(),
        ));
    }
    // The tx set is in another order than the results, as on a real network.
    envelopes.reverse();
    let header = LedgerHeaderHistoryEntry {
        hash: Hash([0; 32]),
        header: LedgerHeader {
            ledger_version: protocol,
            ledger_seq: seq,
            scp_value: StellarValue {
                tx_set_hash: Hash([0; 32]),
                close_time: TimePoint(CLOSE_TIME),
                upgrades: VecM::default(),
                ext: StellarValueExt::Basic,
            },
            ..Default::default()
        },
        ext: LedgerHeaderHistoryEntryExt::V0,
    };
    let tx_set = GeneralizedTransactionSet::V1(TransactionSetV1 {
        previous_ledger_hash: Hash([0; 32]),
        phases: vec![TransactionPhase::V0(
            vec![TxSetComponent::TxsetCompTxsMaybeDiscountedFee(
                TxSetComponentTxsMaybeDiscountedFee {
                    base_fee: None,
                    txs: envelopes.try_into().expect("txs"),
                },
            )]
            .try_into()
            .expect("components"),
        )]
        .try_into()
        .expect("phases"),
    });
    if protocol >= 23 {
        LedgerCloseMeta::V2(LedgerCloseMetaV2 {
            ext: LedgerCloseMetaExt::V0,
            ledger_header: header,
            tx_set,
            tx_processing: processing
                .into_iter()
                .map(|(result, fee, meta, post)| TransactionResultMetaV1 {
                    ext: ExtensionPoint::V0,
                    result,
                    fee_processing: fee.try_into().expect("fee changes"),
                    tx_apply_processing: meta,
                    post_tx_apply_fee_processing: post.try_into().expect("post changes"),
                })
                .collect::<Vec<_>>()
                .try_into()
                .expect("processing"),
            upgrades_processing: VecM::default(),
            scp_info: VecM::default(),
            total_byte_size_of_live_soroban_state: 0,
            evicted_keys: VecM::default(),
        })
    } else {
        LedgerCloseMeta::V1(LedgerCloseMetaV1 {
            ext: LedgerCloseMetaExt::V0,
            ledger_header: header,
            tx_set,
            tx_processing: processing
                .into_iter()
                .map(|(result, fee, meta, _)| TransactionResultMeta {
                    result,
                    fee_processing: fee.try_into().expect("fee changes"),
                    tx_apply_processing: meta,
                })
                .collect::<Vec<_>>()
                .try_into()
                .expect("processing"),
            upgrades_processing: VecM::default(),
            scp_info: VecM::default(),
            total_byte_size_of_live_soroban_state: 0,
            evicted_keys: VecM::default(),
            unused: VecM::default(),
        })
    }
}

/// A contract event.
pub fn contract_event(contract: [u8; 32], topics: Vec<ScVal>, data: ScVal) -> ContractEvent {
    ContractEvent {
        ext: ExtensionPoint::V0,
        contract_id: Some(ContractId(Hash(contract))),
        type_: ContractEventType::Contract,
        body: ContractEventBody::V0(ContractEventV0 {
            topics: topics.try_into().expect("topics"),
            data,
        }),
    }
}

pub fn sym(s: &str) -> ScVal {
    ScVal::Symbol(ScSymbol(s.try_into().expect("symbol")))
}

pub fn string(s: &str) -> ScVal {
    ScVal::String(ScString(s.try_into().expect("string")))
}

pub fn addr(n: u8) -> ScVal {
    ScVal::Address(ScAddress::Account(account(n)))
}

pub fn contract_addr(id: [u8; 32]) -> ScVal {
    ScVal::Address(ScAddress::Contract(ContractId(Hash(id))))
}

pub fn i128(v: i128) -> ScVal {
    ScVal::I128(Int128Parts {
        hi: (v >> 64) as i64,
        lo: v as u64,
    })
}

pub fn invoke_op() -> Operation {
    op(
        None,
        OperationBody::InvokeHostFunction(InvokeHostFunctionOp {
            host_function: HostFunction::InvokeContract(InvokeContractArgs {
                contract_address: ScAddress::Contract(ContractId(Hash([9; 32]))),
                function_name: ScSymbol("transfer".try_into().expect("symbol")),
                args: VecM::default(),
            }),
            auth: VecM::default(),
        }),
    )
}

pub fn invoke_result() -> OperationResultTr {
    OperationResultTr::InvokeHostFunction(InvokeHostFunctionResult::Success(Hash([0; 32])))
}
