//! Optional TLS for the gRPC endpoints. Requests and the artefacts they fetch are signed by hotkeys
//! whatever the transport, so TLS adds privacy on the wire and keeps a man in the middle from even
//! reading them. A process configures it once at start (`--tls-cert`, `--tls-key`: serve TLS;
//! `--tls-ca`: reach peers over TLS, trusting certificates that CA issued). A peer is reached at its
//! axon's IP address, so its certificate must name that address (an IP subject alternative name).

use std::path::Path;
use std::sync::OnceLock;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// What this process does with TLS.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    /// PEM certificate chain and private key this process serves with.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// PEM certificate(s) of the authority whose certificates peers present.
    pub ca: Option<Vec<u8>>,
}

static CONFIG: OnceLock<TlsFiles> = OnceLock::new();

impl TlsFiles {
    /// Reads the files named on the command line: a certificate needs its key and the other way
    /// round; a missing or unreadable file is an error that names it.
    pub fn read(
        cert: Option<&Path>,
        key: Option<&Path>,
        ca: Option<&Path>,
    ) -> Result<Self, String> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key go together".into()),
        };
        let ca = ca.map(read).transpose()?;
        Ok(Self { identity, ca })
    }
}

/// Sets this process's TLS once; a second call is refused.
pub fn configure(files: TlsFiles) -> Result<(), String> {
    CONFIG
        .set(files)
        .map_err(|_| "TLS is configured once per process".to_string())
}

/// Reads the files named on the command line and sets this process's TLS from them.
pub fn configure_from_files(
    cert: Option<&Path>,
    key: Option<&Path>,
    ca: Option<&Path>,
) -> Result<(), String> {
    configure(TlsFiles::read(cert, key, ca)?)
}

fn config() -> &'static TlsFiles {
    CONFIG.get_or_init(TlsFiles::default)
}

/// The server side, when this process serves TLS.
pub fn server_config() -> Option<ServerTlsConfig> {
    config()
        .identity
        .as_ref()
        .map(|(cert, key)| ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
}

/// The endpoint of a peer at `addr` (host:port): https with the configured authority, else http.
/// Its HTTP/2 flow-control windows follow the measured bandwidth-delay product (adaptive windows)
/// instead of the fixed 2 MiB a stream may otherwise have in flight: a validator reading many
/// streams at once, slower than they arrive, holds what the link needs, not 2 MiB of each.
pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    let endpoint = match &config().ca {
        Some(ca) => Endpoint::from_shared(format!("https://{addr}"))?
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))?,
        None => Endpoint::from_shared(format!("http://{addr}"))?,
    };
    Ok(endpoint.http2_adaptive_window(true))
}
