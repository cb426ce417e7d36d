//! Strkeys, assets and Stellar Asset Contract ids, as upstream renders them in events.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use stellar_xdr::{
    AccountId, AlphaNum12, AlphaNum4, Asset, AssetCode12, AssetCode4, ClaimableBalanceId,
    ContractId, ContractIdPreimage, Hash, HashIdPreimage, HashIdPreimageContractId, Limits,
    MuxedAccount, PoolId, PublicKey, ScAddress, TrustLineAsset, Uint256, WriteXdr,
};

use flowctl_proto::asset as proto;

/// `sha256(passphrase)`: the network id that tx hashes and contract ids are derived from.
pub fn network_id(passphrase: &str) -> [u8; 32] {
    Sha256::digest(passphrase.as_bytes()).into()
}

/// The `G…` strkey of an account.
pub fn account_strkey(account: &AccountId) -> String {
    account.to_string()
}

/// The `G…` strkey of a muxed account's underlying account (upstream always reduces `M…`).
pub fn muxed_base_strkey(account: &MuxedAccount) -> String {
    match account {
        MuxedAccount::Ed25519(key) => ed25519_strkey(key),
        MuxedAccount::MuxedEd25519(m) => ed25519_strkey(&m.ed25519),
    }
}

/// The strkey of a muxed account as written: `M…` when it carries an id, else `G…`.
pub fn muxed_strkey(account: &MuxedAccount) -> String {
    account.to_string()
}

/// The `G…` strkey of a raw ed25519 key.
pub fn ed25519_strkey(key: &Uint256) -> String {
    AccountId(PublicKey::PublicKeyTypeEd25519(key.clone())).to_string()
}

/// The `L…` strkey of a liquidity pool.
pub fn pool_strkey(pool: &PoolId) -> String {
    pool.to_string()
}

/// The `B…` strkey of a claimable balance.
pub fn claimable_balance_strkey(id: &ClaimableBalanceId) -> String {
    id.to_string()
}

/// The `C…` strkey of a contract.
pub fn contract_strkey(id: &[u8; 32]) -> String {
    ContractId(Hash(*id)).to_string()
}

/// The strkey of a Soroban address (`G…`, `C…`, `M…`, `B…` or `L…`).
pub fn sc_address_strkey(address: &ScAddress) -> String {
    address.to_string()
}

/// Whether a strkey names an account (`G…` or `M…`): only accounts can be issuers, and only
/// they carry muxed information.
pub fn is_account_strkey(strkey: &str) -> bool {
    strkey.len() >= 56 && (strkey.starts_with('G') || strkey.starts_with('M'))
}

/// The underlying `G…` account of an account strkey (`M…` reduced), if it is one.
pub fn account_of_strkey(strkey: &str) -> Option<String> {
    match strkey.parse::<MuxedAccount>() {
        Ok(account) => Some(muxed_base_strkey(&account)),
        Err(_) => None,
    }
}

/// The mux id of an `M…` strkey.
pub fn mux_id_of_strkey(strkey: &str) -> Option<u64> {
    match strkey.parse::<MuxedAccount>() {
        Ok(MuxedAccount::MuxedEd25519(m)) => Some(m.id),
        _ => None,
    }
}

/// Trailing NULs trimmed, as Go's `Asset.GetCode`.
fn code_string(bytes: &[u8]) -> String {
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Asset code and issuer of an issued asset; `None` for XLM.
pub fn asset_code_issuer(asset: &Asset) -> Option<(String, &AccountId)> {
    match asset {
        Asset::Native => None,
        Asset::CreditAlphanum4(a) => Some((code_string(&a.asset_code.0), &a.issuer)),
        Asset::CreditAlphanum12(a) => Some((code_string(&a.asset_code.0), &a.issuer)),
    }
}

/// The issuer of an issued asset; `None` for XLM.
pub fn asset_issuer(asset: &Asset) -> Option<&AccountId> {
    match asset {
        Asset::Native => None,
        Asset::CreditAlphanum4(a) => Some(&a.issuer),
        Asset::CreditAlphanum12(a) => Some(&a.issuer),
    }
}

/// The proto form of an asset (`{native: true}` or `{issued_asset: {asset_code, issuer}}`).
pub fn proto_asset(asset: &Asset) -> proto::Asset {
    let asset_type = match asset_code_issuer(asset) {
        None => proto::asset::AssetType::Native(true),
        Some((asset_code, issuer)) => proto::asset::AssetType::IssuedAsset(proto::IssuedAsset {
            asset_code,
            issuer: account_strkey(issuer),
        }),
    };
    proto::Asset {
        asset_type: Some(asset_type),
    }
}

/// The canonical string of an asset (`native` or `CODE:ISSUER`), a map key for balance checks.
pub fn asset_canonical(asset: &Asset) -> String {
    match asset_code_issuer(asset) {
        None => "native".to_string(),
        Some((code, issuer)) => format!("{code}:{}", account_strkey(issuer)),
    }
}

/// The canonical string of a proto asset, matching [`asset_canonical`].
pub fn proto_asset_canonical(asset: &proto::Asset) -> Option<String> {
    match asset.asset_type.as_ref()? {
        proto::asset::AssetType::Native(_) => Some("native".to_string()),
        proto::asset::AssetType::IssuedAsset(a) => Some(format!("{}:{}", a.asset_code, a.issuer)),
    }
}

/// The asset of a trustline; `None` for pool shares (they are not a token balance).
pub fn trustline_asset(asset: &TrustLineAsset) -> Option<Asset> {
    match asset {
        TrustLineAsset::Native => Some(Asset::Native),
        TrustLineAsset::CreditAlphanum4(a) => Some(Asset::CreditAlphanum4(a.clone())),
        TrustLineAsset::CreditAlphanum12(a) => Some(Asset::CreditAlphanum12(a.clone())),
        TrustLineAsset::PoolShare(_) => None,
    }
}

/// Parses one asset in its SEP-11 form (`native` or `CODE:ISSUER`), as Go's `xdr.BuildAssets`
/// does for a single asset. Anything else (including lists) is `None`.
pub fn parse_sep11_asset(text: &str) -> Option<Asset> {
    if text.contains(',') {
        return None;
    }
    if text.eq_ignore_ascii_case("native") || text.eq_ignore_ascii_case("xlm") {
        return Some(Asset::Native);
    }
    let (code, issuer) = text.split_once(':')?;
    if code.is_empty() || code.len() > 12 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let issuer: AccountId = issuer.parse().ok()?;
    if code.len() <= 4 {
        let mut bytes = [0u8; 4];
        bytes[..code.len()].copy_from_slice(code.as_bytes());
        Some(Asset::CreditAlphanum4(AlphaNum4 {
            asset_code: AssetCode4(bytes),
            issuer,
        }))
    } else {
        let mut bytes = [0u8; 12];
        bytes[..code.len()].copy_from_slice(code.as_bytes());
        Some(Asset::CreditAlphanum12(AlphaNum12 {
            asset_code: AssetCode12(bytes),
            issuer,
        }))
    }
}

/// The contract id of an asset's Stellar Asset Contract on a network:
/// `sha256(HashIdPreimage::ContractId { network_id, FromAsset(asset) })`.
pub fn asset_contract_id(network_id: &[u8; 32], asset: &Asset) -> [u8; 32] {
    let preimage = HashIdPreimage::ContractId(HashIdPreimageContractId {
        network_id: Hash(*network_id),
        contract_id_preimage: ContractIdPreimage::Asset(asset.clone()),
    });
    // Serialising a well-formed in-memory value into a Vec cannot fail.
    let bytes = preimage.to_xdr(Limits::none()).unwrap_or_default();
    Sha256::digest(&bytes).into()
}

/// Caches each asset's SAC contract address (`C…`) for one network: every event carries one,
/// and hashing per event would dominate extraction time.
#[derive(Debug, Clone)]
pub struct ContractAddresses {
    network_id: [u8; 32],
    cache: HashMap<Asset, String>,
}

impl ContractAddresses {
    /// An empty cache for the network with this passphrase.
    pub fn new(passphrase: &str) -> Self {
        ContractAddresses {
            network_id: network_id(passphrase),
            cache: HashMap::new(),
        }
    }

    /// The network id.
    pub fn network_id(&self) -> &[u8; 32] {
        &self.network_id
    }

    /// The `C…` address of `asset`'s Stellar Asset Contract.
    pub fn address(&mut self, asset: &Asset) -> String {
        if let Some(address) = self.cache.get(asset) {
            return address.clone();
        }
        let address = contract_strkey(&asset_contract_id(&self.network_id, asset));
        self.cache.insert(asset.clone(), address.clone());
        address
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_sac_addresses_are_the_published_ones() {
        // The XLM SAC ids every Stellar explorer shows for these networks.
        let mut testnet = ContractAddresses::new("Test SDF Network ; September 2015");
        assert_eq!(
            testnet.address(&Asset::Native),
            "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC"
        );
        let mut mainnet = ContractAddresses::new("Public Global Stellar Network ; September 2015");
        assert_eq!(
            mainnet.address(&Asset::Native),
            "CAS3J7GYLGXMF6TDJBBYYSE3HQ6BBSMLNUQ34T6TZMYMW2EVH34XOWMA"
        );
    }

    #[test]
    fn usdc_sac_address_on_mainnet() {
        let usdc =
            parse_sep11_asset("USDC:GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN")
                .expect("valid asset");
        let mut mainnet = ContractAddresses::new("Public Global Stellar Network ; September 2015");
        assert_eq!(
            mainnet.address(&usdc),
            "CCW67TSZV3SSS2HXMBQ5JFGCKJNXKZM7UQUWUZPUTHXSTZLEO7SJMI75"
        );
    }

    #[test]
    fn sep11_parsing_accepts_only_single_assets() {
        assert_eq!(parse_sep11_asset("native"), Some(Asset::Native));
        let issuer = "GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN";
        assert!(matches!(
            parse_sep11_asset(&format!("ABCDE:{issuer}")),
            Some(Asset::CreditAlphanum12(_))
        ));
        assert!(parse_sep11_asset(&format!("USDC:{issuer},native")).is_none());
        assert!(parse_sep11_asset("USDC:notakey").is_none());
        assert!(parse_sep11_asset(&format!("US-C:{issuer}")).is_none());
        assert!(parse_sep11_asset(&format!("ABCDEFGHIJKLM:{issuer}")).is_none());
    }

    #[test]
    fn asset_codes_drop_trailing_nuls() {
        let asset =
            parse_sep11_asset("AB:GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN")
                .expect("valid asset");
        assert_eq!(
            asset_canonical(&asset),
            "AB:GA5ZSEJYB37JRC5AVCIA5MOP4RHTM335X2KGX3IHOJAPP5RE34K4KZVN"
        );
    }

    #[test]
    fn muxed_accounts_reduce_to_their_account() {
        // SEP-23 test vector (mux id 0).
        let m = "MA7QYNF7SOWQ3GLR2BGMZEHXAVIRZA4KVWLTJJFC7MGXUA74P7UJUAAAAAAAAAAAACJUQ";
        let g = "GA7QYNF7SOWQ3GLR2BGMZEHXAVIRZA4KVWLTJJFC7MGXUA74P7UJVSGZ";
        assert_eq!(account_of_strkey(m).as_deref(), Some(g));
        assert_eq!(mux_id_of_strkey(m), Some(0));
        let account: AccountId = g.parse().expect("valid G");
        let PublicKey::PublicKeyTypeEd25519(key) = account.0;
        let muxed = MuxedAccount::MuxedEd25519(stellar_xdr::MuxedAccountMed25519 {
            id: 1234,
            ed25519: key,
        });
        let m = muxed_strkey(&muxed);
        assert!(m.starts_with('M') && is_account_strkey(&m));
        assert_eq!(account_of_strkey(&m).as_deref(), Some(g));
        assert_eq!(muxed_base_strkey(&muxed), g);
        assert_eq!(mux_id_of_strkey(&m), Some(1234));
        assert_eq!(mux_id_of_strkey(g), None);
        assert!(!is_account_strkey(
            "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC"
        ));
    }
}
