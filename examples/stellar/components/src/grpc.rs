//! gRPC settings shared by the three components: addresses, message size limits and HTTP/2
//! flow control windows sized for ledgers of several megabytes.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tonic::transport::{Endpoint, Server};

/// Largest message accepted: a busy mainnet `LedgerCloseMeta` is tens of megabytes, far above
/// gRPC's 4 MiB default.
pub const MAX_MESSAGE_BYTES: usize = 512 << 20;

/// Per-stream HTTP/2 window. The 64 KiB default makes a sender stop for a round trip every
/// 64 KiB, which caps a ledger stream well below what decoding can do.
const STREAM_WINDOW_BYTES: u32 = 8 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;

/// A server builder with the large windows.
pub fn server() -> Server {
    Server::builder()
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .tcp_nodelay(true)
}

/// A client endpoint for `address` (`host:port`, a scheme is accepted too) with the large
/// windows. `variable` names the setting the address came from, for the error.
pub fn endpoint(variable: &str, address: &str) -> Result<Endpoint, String> {
    let uri = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| format!("{variable}: {address:?} is not a host:port address ({e})"))?;
    Ok(endpoint
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5)))
}

/// Parses a listen address as upstream writes it: `:50051`, `50051` or `host:port`.
pub fn listen_addr(variable: &str, value: &str) -> Result<SocketAddr, String> {
    let value = value.trim();
    let port_only = value.strip_prefix(':').unwrap_or(value);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    value
        .parse()
        .map_err(|_| format!("{variable}: {value:?} is not a port or address such as :50051"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_in_upstream_forms() {
        assert_eq!(
            listen_addr("PORT", ":50051").unwrap().to_string(),
            "0.0.0.0:50051"
        );
        assert_eq!(
            listen_addr("PORT", "50052").unwrap().to_string(),
            "0.0.0.0:50052"
        );
        assert_eq!(
            listen_addr("PORT", "127.0.0.1:9000").unwrap().to_string(),
            "127.0.0.1:9000"
        );
        let err = listen_addr("PORT", "fifty").unwrap_err();
        assert!(err.starts_with("PORT:"), "{err}");
    }

    #[test]
    fn client_addresses_get_a_scheme() {
        let endpoint = endpoint("SOURCE_SERVICE_ADDRESS", "source:50052").unwrap();
        assert_eq!(endpoint.uri().to_string(), "http://source:50052/");
        let err = endpoint_error("SOURCE_SERVICE_ADDRESS", "not an address");
        assert!(err.starts_with("SOURCE_SERVICE_ADDRESS:"), "{err}");
    }

    fn endpoint_error(variable: &str, address: &str) -> String {
        match endpoint(variable, address) {
            Ok(_) => panic!("{address:?} was accepted"),
            Err(e) => e,
        }
    }
}
