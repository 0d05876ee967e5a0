//! Egress through an HTTP CONNECT proxy on TCP. pingora speaks CONNECT over a Unix socket
//! (`HttpPeer::proxy`); for a proxy on TCP (the usual fixed-IP egress proxy) paysign runs this
//! bridge: a private Unix socket whose every connection is piped to the proxy's TCP address.
//! pingora then does the CONNECT and the TLS inside the tunnel as usual.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{TcpStream, UnixListener};
use tokio::sync::oneshot;

static BRIDGES: AtomicU64 = AtomicU64::new(0);

/// A running bridge; stops and removes its socket when dropped.
pub struct TcpBridge {
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for TcpBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TcpBridge({})", self.path.display())
    }
}

impl TcpBridge {
    /// Starts a bridge to `proxy` on a fresh socket in the temporary directory (mode 0600).
    pub fn start(proxy: SocketAddr) -> std::io::Result<TcpBridge> {
        let n = BRIDGES.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("paysign-egress-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let std_listener = std::os::unix::net::UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        std_listener.set_nonblocking(true)?;
        let (stop, mut stopped) = oneshot::channel();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new().name("paysign egress".into()).spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = UnixListener::from_std(std_listener) else { return };
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => {
                            let Ok((mut local, _)) = accepted else { continue };
                            tokio::spawn(async move {
                                match TcpStream::connect(proxy).await {
                                    Ok(mut remote) => {
                                        let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
                                    }
                                    Err(e) => tracing::warn!("egress proxy {proxy} unreachable: {e}"),
                                }
                            });
                        }
                    }
                }
            })
        })?;
        Ok(TcpBridge { path, stop: Some(stop) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TcpBridge {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
