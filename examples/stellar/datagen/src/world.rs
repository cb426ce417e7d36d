//! The simulated network state: accounts with XLM balances and trustlines, issued assets with
//! their Stellar Asset Contracts, and the ledger entries that describe them.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use stellar_xdr::{
    AccountEntry, AccountEntryExt, AccountId, AlphaNum12, AlphaNum4, Asset, AssetCode12,
    AssetCode4, ContractId, ContractIdPreimage, Hash, HashIdPreimage, HashIdPreimageContractId,
    LedgerEntry, LedgerEntryData, LedgerEntryExt, LedgerKey, LedgerKeyAccount, LedgerKeyTrustLine,
    Limits, PublicKey, SequenceNumber, String32, Thresholds, TrustLineAsset, TrustLineEntry,
    TrustLineEntryExt, Uint256, WriteXdr,
};

use crate::expected::EventAsset;
use crate::rng::SplitMix64;

/// Trustline flag `AUTHORIZED_FLAG`.
const TRUSTLINE_AUTHORIZED: u32 = 1;
/// Trustline flag `TRUSTLINE_CLAWBACK_ENABLED_FLAG`.
const TRUSTLINE_CLAWBACK_ENABLED: u32 = 4;
/// Account flags `AUTH_REVOCABLE_FLAG | AUTH_CLAWBACK_ENABLED_FLAG`.
const ISSUER_CLAWBACK_FLAGS: u32 = 2 | 8;

/// A token: XLM or one of the world's issued assets (by index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tok {
    Native,
    Issued(usize),
}

/// One account of the simulated network.
#[derive(Debug, Clone)]
pub struct Account {
    pub key: [u8; 32],
    /// `G…` strkey, computed once.
    pub strkey: String,
    /// Stroops.
    pub balance: i64,
    /// Sequence number of the last applied transaction.
    pub seq: i64,
    /// Sequence number handed to the last planned transaction (ahead of `seq` within a ledger).
    pub next_seq: i64,
    pub flags: u32,
    /// Trustline balances by asset index.
    pub lines: BTreeMap<usize, i64>,
    pub last_modified: u32,
    /// False before its creating transaction applies and after it is merged away.
    pub alive: bool,
}

/// An issued asset.
#[derive(Debug, Clone)]
pub struct AssetInfo {
    pub code: String,
    pub issuer: usize,
    pub clawback: bool,
    pub xdr: Asset,
    /// SEP-11 name, as the Stellar Asset Contract puts it in its event topics.
    pub sep11: String,
    /// The asset's Stellar Asset Contract id and its `C…` strkey.
    pub sac: [u8; 32],
    pub sac_strkey: String,
}

/// Sizes of the initial population.
#[derive(Debug, Clone, Copy)]
pub struct Population {
    pub users: usize,
    pub issuers: usize,
    pub assets: usize,
    pub makers: usize,
}

/// Asset codes handed out in order (4-character ones become `CreditAlphanum4`).
const CODES: [&str; 16] = [
    "USDC",
    "EURC",
    "AQUA",
    "yXLM",
    "BTC",
    "ETH",
    "SHX",
    "VELO",
    "BENJI",
    "ARST",
    "NGNC",
    "ZUSD",
    "GOLDTOKEN",
    "XRP",
    "MOBI",
    "BRLT",
];

/// The network state the generator advances ledger by ledger.
#[derive(Debug)]
pub struct World {
    pub network_id: [u8; 32],
    pub accounts: Vec<Account>,
    /// Ordinary accounts (payers and payees).
    pub users: Vec<usize>,
    pub issuers: Vec<usize>,
    /// Market makers: trust everything and fill path payment offers.
    pub makers: Vec<usize>,
    /// Accounts made by create-account operations, with no trustlines: candidates for merges.
    pub fresh: Vec<usize>,
    pub assets: Vec<AssetInfo>,
    pub native_sac: [u8; 32],
    pub native_sac_strkey: String,
    pub next_offer_id: i64,
}

impl World {
    /// A world whose accounts exist as of ledger `genesis` (the ledger before the first generated
    /// one).
    pub fn new(
        rng: &mut SplitMix64,
        passphrase: &str,
        pop: Population,
        genesis: u32,
    ) -> Result<World> {
        let network_id: [u8; 32] = Sha256::digest(passphrase.as_bytes()).into();
        let native_sac = asset_contract_id(&network_id, &Asset::Native)?;
        let mut world = World {
            network_id,
            accounts: Vec::new(),
            users: Vec::new(),
            issuers: Vec::new(),
            makers: Vec::new(),
            fresh: Vec::new(),
            assets: Vec::new(),
            native_sac,
            native_sac_strkey: contract_strkey(&native_sac),
            next_offer_id: 1_000_000 + rng.below(1_000_000) as i64,
        };
        for _ in 0..pop.issuers {
            let balance = rng.range(10_000_000_000, 100_000_000_000);
            let id = world.new_account(rng, balance, genesis);
            world.accounts[id].alive = true;
            world.issuers.push(id);
        }
        for i in 0..pop.assets {
            let code = CODES[i % CODES.len()].to_string();
            let issuer = world.issuers[i % world.issuers.len()];
            // Every third asset can be clawed back (its issuer has AUTH_CLAWBACK_ENABLED).
            let clawback = i % 3 == 1;
            if clawback {
                world.accounts[issuer].flags |= ISSUER_CLAWBACK_FLAGS;
            }
            let issuer_id = account_id(&world.accounts[issuer].key);
            let xdr = issued_asset(&code, issuer_id)?;
            let sac = asset_contract_id(&network_id, &xdr)?;
            world.assets.push(AssetInfo {
                sep11: format!("{code}:{}", world.accounts[issuer].strkey),
                code,
                issuer,
                clawback,
                xdr,
                sac,
                sac_strkey: contract_strkey(&sac),
            });
        }
        for _ in 0..pop.makers {
            let id = world.new_account(rng, 100_000_000_000_000, genesis);
            world.accounts[id].alive = true;
            for a in 0..world.assets.len() {
                world.accounts[id].lines.insert(a, 100_000_000_000_000);
            }
            world.makers.push(id);
        }
        for _ in 0..pop.users {
            let balance = rng.range(100_000_000_000, 10_000_000_000_000);
            let id = world.new_account(rng, balance, genesis);
            world.accounts[id].alive = true;
            let wanted = 1 + rng.index(world.assets.len().min(4));
            for _ in 0..wanted {
                let a = rng.index(world.assets.len());
                let amount = rng.range(1_000_000_000, 1_000_000_000_000);
                world.accounts[id].lines.insert(a, amount);
            }
            world.users.push(id);
        }
        Ok(world)
    }

    /// Adds an account (not yet alive) and returns its index. Sequence numbers start where
    /// stellar-core starts them: the creating ledger shifted left by 32 bits.
    pub fn new_account(&mut self, rng: &mut SplitMix64, balance: i64, ledger: u32) -> usize {
        let key = rng.bytes32();
        let seq = i64::from(ledger) << 32;
        self.accounts.push(Account {
            strkey: account_id(&key).to_string(),
            key,
            balance,
            seq,
            next_seq: seq,
            flags: 0,
            lines: BTreeMap::new(),
            last_modified: ledger,
            alive: false,
        });
        self.accounts.len() - 1
    }

    /// Whether `acct` is the issuer of `tok` (issuers hold no trustline for their own asset).
    pub fn is_issuer(&self, acct: usize, tok: Tok) -> bool {
        matches!(tok, Tok::Issued(a) if self.assets[a].issuer == acct)
    }

    /// Whether `acct` can hold `tok`.
    pub fn can_hold(&self, acct: usize, tok: Tok) -> bool {
        match tok {
            Tok::Native => true,
            Tok::Issued(a) => {
                self.assets[a].issuer == acct || self.accounts[acct].lines.contains_key(&a)
            }
        }
    }

    /// Balance of `tok` held by `acct`; an issuer holds unlimited amounts of its own asset.
    pub fn balance(&self, acct: usize, tok: Tok) -> i64 {
        match tok {
            Tok::Native => self.accounts[acct].balance,
            Tok::Issued(a) if self.assets[a].issuer == acct => i64::MAX,
            Tok::Issued(a) => self.accounts[acct].lines.get(&a).copied().unwrap_or(0),
        }
    }

    /// The XDR asset of a token.
    pub fn asset(&self, tok: Tok) -> Asset {
        match tok {
            Tok::Native => Asset::Native,
            Tok::Issued(a) => self.assets[a].xdr.clone(),
        }
    }

    /// The asset as events show it.
    pub fn event_asset(&self, tok: Tok) -> EventAsset {
        match tok {
            Tok::Native => EventAsset::Native,
            Tok::Issued(a) => EventAsset::Issued {
                code: self.assets[a].code.clone(),
                issuer: self.accounts[self.assets[a].issuer].strkey.clone(),
            },
        }
    }

    /// The token's Stellar Asset Contract id.
    pub fn sac(&self, tok: Tok) -> [u8; 32] {
        match tok {
            Tok::Native => self.native_sac,
            Tok::Issued(a) => self.assets[a].sac,
        }
    }

    /// The token's Stellar Asset Contract strkey.
    pub fn sac_strkey(&self, tok: Tok) -> &str {
        match tok {
            Tok::Native => &self.native_sac_strkey,
            Tok::Issued(a) => &self.assets[a].sac_strkey,
        }
    }

    /// SEP-11 name of the token (`native` or `CODE:ISSUER`).
    pub fn sep11(&self, tok: Tok) -> &str {
        match tok {
            Tok::Native => "native",
            Tok::Issued(a) => &self.assets[a].sep11,
        }
    }

    /// The account's ledger entry as it is now.
    pub fn account_entry(&self, acct: usize) -> LedgerEntry {
        let a = &self.accounts[acct];
        LedgerEntry {
            last_modified_ledger_seq: a.last_modified,
            data: LedgerEntryData::Account(AccountEntry {
                account_id: account_id(&a.key),
                balance: a.balance,
                seq_num: SequenceNumber(a.seq),
                num_sub_entries: a.lines.len() as u32,
                inflation_dest: None,
                flags: a.flags,
                home_domain: String32::default(),
                thresholds: Thresholds([1, 0, 0, 0]),
                signers: Default::default(),
                ext: AccountEntryExt::V0,
            }),
            ext: LedgerEntryExt::V0,
        }
    }

    /// The account's trustline entry for asset `asset` as it is now.
    pub fn trustline_entry(&self, acct: usize, asset: usize) -> LedgerEntry {
        let a = &self.accounts[acct];
        let info = &self.assets[asset];
        let mut flags = TRUSTLINE_AUTHORIZED;
        if info.clawback {
            flags |= TRUSTLINE_CLAWBACK_ENABLED;
        }
        LedgerEntry {
            last_modified_ledger_seq: a.last_modified,
            data: LedgerEntryData::Trustline(TrustLineEntry {
                account_id: account_id(&a.key),
                asset: trustline_asset(&info.xdr),
                balance: a.lines.get(&asset).copied().unwrap_or(0),
                limit: i64::MAX,
                flags,
                ext: TrustLineEntryExt::V0,
            }),
            ext: LedgerEntryExt::V0,
        }
    }

    /// Ledger key of the entry holding `tok` for `acct` (account or trustline).
    pub fn balance_key(&self, acct: usize, tok: Tok) -> LedgerKey {
        let account_id = account_id(&self.accounts[acct].key);
        match tok {
            Tok::Native => LedgerKey::Account(LedgerKeyAccount { account_id }),
            Tok::Issued(a) => LedgerKey::Trustline(LedgerKeyTrustLine {
                account_id,
                asset: trustline_asset(&self.assets[a].xdr),
            }),
        }
    }
}

/// `AccountId` of a raw ed25519 key.
pub fn account_id(key: &[u8; 32]) -> AccountId {
    AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(*key)))
}

fn issued_asset(code: &str, issuer: AccountId) -> Result<Asset> {
    let bytes = code.as_bytes();
    if bytes.len() <= 4 {
        let mut c = [0u8; 4];
        c[..bytes.len()].copy_from_slice(bytes);
        Ok(Asset::CreditAlphanum4(AlphaNum4 {
            asset_code: AssetCode4(c),
            issuer,
        }))
    } else {
        let mut c = [0u8; 12];
        c.get_mut(..bytes.len())
            .with_context(|| format!("asset code {code} is longer than 12 characters"))?
            .copy_from_slice(bytes);
        Ok(Asset::CreditAlphanum12(AlphaNum12 {
            asset_code: AssetCode12(c),
            issuer,
        }))
    }
}

fn trustline_asset(asset: &Asset) -> TrustLineAsset {
    match asset {
        Asset::Native => TrustLineAsset::Native,
        Asset::CreditAlphanum4(a) => TrustLineAsset::CreditAlphanum4(a.clone()),
        Asset::CreditAlphanum12(a) => TrustLineAsset::CreditAlphanum12(a.clone()),
    }
}

/// The Stellar Asset Contract id of `asset`: sha256 of the XDR
/// `HashIdPreimage::ContractId { network_id, FromAsset(asset) }` (CAP-46-6).
pub fn asset_contract_id(network_id: &[u8; 32], asset: &Asset) -> Result<[u8; 32]> {
    let preimage = HashIdPreimage::ContractId(HashIdPreimageContractId {
        network_id: Hash(*network_id),
        contract_id_preimage: ContractIdPreimage::Asset(asset.clone()),
    });
    let xdr = preimage
        .to_xdr(Limits::none())
        .context("encoding the contract id preimage")?;
    Ok(Sha256::digest(&xdr).into())
}

/// `C…` strkey of a contract id.
pub fn contract_strkey(id: &[u8; 32]) -> String {
    ContractId(Hash(*id)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_sac_ids_match_the_known_addresses() {
        // The native asset contract of testnet, as in the upstream expected events.
        let testnet: [u8; 32] = Sha256::digest(b"Test SDF Network ; September 2015").into();
        let id = asset_contract_id(&testnet, &Asset::Native).unwrap();
        assert_eq!(
            contract_strkey(&id),
            "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC"
        );
        // The native asset contract of mainnet (published by SDF).
        let mainnet: [u8; 32] =
            Sha256::digest(b"Public Global Stellar Network ; September 2015").into();
        let id = asset_contract_id(&mainnet, &Asset::Native).unwrap();
        assert_eq!(
            contract_strkey(&id),
            "CAS3J7GYLGXMF6TDJBBYYSE3HQ6BBSMLNUQ34T6TZMYMW2EVH34XOWMA"
        );
    }
}
