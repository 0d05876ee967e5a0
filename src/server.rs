//! Assembling pingora services from validated configurations and running them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;

use paysign_plugin::config::Config;
use paysign_plugin::metrics::{Listener, Metrics};
use paysign_plugin::Live;
use paysign_plugin::Paysign;
use paysign_plugin::{safeguarded_service, tcp_listener, Limits};
use paysign_plugin::{Admin, ReadyState};
use paysign_plugin::{Notifications, NOTIFY_NICE};
use paysign_plugin::{Reload, ReloadOnSighup};
use paysign_sandbox::SandboxConfig;
use paysign_sandbox::{SandboxApp, SandboxService};

use crate::gateway::Gateway;
use crate::lifecycle::{self, Listen, RunFiles, Signals};

/// Requires client certificates issued by the CA in `ca` (the sandbox's mutual TLS).
fn client_verifier(ca: &std::path::Path) -> Result<Arc<dyn pingora::tls::ClientCertVerifier>, String> {
    pingora::tls::install_default_crypto_provider();
    let mut roots = pingora::tls::RootCertStore::empty();
    pingora::tls::load_ca_file_into_store(ca, &mut roots).map_err(|e| format!("tls_client_ca_file {}: {e}", ca.display()))?;
    pingora::tls::WebPkiClientVerifier::builder(Arc::new(roots)).build().map_err(|e| format!("tls_client_ca_file {}: {e}", ca.display()))
}

/// The sandbox, reloaded by SIGHUP like the gateway (its failures logged here: its `reload`
/// only returns them).
struct SandboxReload(Arc<SandboxService>);

impl Reload for SandboxReload {
    fn reload(&self) {
        if let Err(e) = self.0.reload() {
            tracing::error!("sandbox reload failed: {e}");
        }
    }
}

/// Builds the server with the gateway (proxy + admin) and/or the sandbox, and runs it until
/// SIGTERM (graceful: exits once nothing is in flight), SIGINT (fast) or a SIGQUIT that a new
/// process is waiting for (hand-off).
pub fn run(gateway: Option<Config>, sandbox: Option<SandboxConfig>, upgrade: bool) -> Result<(), String> {
    // The default registry: prometheus's `process_*` metrics are in it too.
    let registry = prometheus::default_registry().clone();
    // Shutdown lasts until no call is in flight (lifecycle::exit_when_drained), at the latest
    // until the drain deadline (the configured grace or the longest a call can take, whichever
    // is longer); pingora's own grace outlasts it, as a fallback (the plugin's drain module).
    let (mut conf, drain) = match &gateway {
        Some(g) => (paysign_plugin::drain::server_conf(g), paysign_plugin::drain::deadline(g)),
        None => {
            let conf = ServerConf {
                threads: 2,
                grace_period_seconds: Some(3),
                graceful_shutdown_timeout_seconds: Some(1),
                ..ServerConf::default()
            };
            (conf, Duration::from_secs(1))
        }
    };
    if gateway.is_some() {
        tracing::info!("shutdown: the drain deadline is {} s (docs/operations.md, Shutdown)", drain.as_secs());
    }
    let files = gateway.as_ref().map(|g| RunFiles::of(&g.upgrade_sock, &g.source));
    let upgrade_sock = match &files {
        Some(f) => match f.prepare() {
            Ok(()) => Some(f.upgrade_sock.clone()),
            Err(e) if upgrade => return Err(e),
            Err(e) => {
                tracing::warn!("graceful upgrade unavailable: {e}");
                None
            }
        },
        None => None,
    };
    if let Some(sock) = &upgrade_sock {
        conf.upgrade_sock = sock.display().to_string();
    }
    let pid_file = files.filter(|_| upgrade_sock.is_some()).map(|f| f.pid_file);
    // `--upgrade`: take the listening sockets from the running process (which hands them
    // over on SIGQUIT) instead of binding them, so no connection is refused meanwhile.
    let opt = Opt { upgrade, ..Opt::default() };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();

    let ready = Arc::new(ReadyState::default());
    let mut listeners: Vec<Listen> = Vec::new();
    let mut reloadable: Vec<Arc<dyn Reload>> = Vec::new();
    // The instance whose sending stops at the drain deadline, and whose calls and notifications
    // the drain waits for.
    let mut paysign: Option<Paysign> = None;
    if let Some(cfg) = gateway {
        paysign_plugin::config::announce(&cfg);
        let proxy_addr: SocketAddr = cfg.listen.parse().map_err(|_| format!("bad listen address {}", cfg.listen))?;
        let (listen, admin_listen) = (cfg.listen.clone(), cfg.admin_listen.clone());
        let notify_listen = cfg.notify.as_ref().map(|n| n.listen.clone());
        listeners.push(Listen { setting: "listen", addr: listen.clone() });
        listeners.push(Listen { setting: "admin_listen", addr: admin_listen.clone() });
        if let Some(n) = &notify_listen {
            listeners.push(Listen { setting: "notify.listen", addr: n.clone() });
        }
        let limits = Limits::of(&cfg);
        let admin_limits = Limits { max_connections: cfg.max_connections.min(64), ..limits };
        for r in cfg.notify.iter().flat_map(|n| n.routes.iter()) {
            tracing::info!("notification route {} -> {}", r.path, r.target.url());
        }
        let metrics = Arc::new(Metrics::new(&registry).map_err(|e| format!("metrics: {e}"))?);
        metrics.crypto_backend(cfg.crypto_backend.as_str());
        let live = Arc::new(Live::new(cfg.source.clone(), cfg, metrics.clone()));
        reloadable.push(live.clone());
        // The listener's own thread: it yields the CPU to the callers' proxy.
        if let Some(svc) = Notifications::new(live.clone()).lower_priority(NOTIFY_NICE).service() {
            server.add_service(svc);
        }
        let instance = Paysign::from_live(live.clone()).map_err(|e| e.to_string())?;
        // Stored notifications are delivered from the inbox by this background service.
        if let Some(deliverer) = instance.deliverer_service() {
            server.add_service(deliverer);
        }
        paysign = Some(instance.clone());
        let mut app = pingora::proxy::HttpProxy::new(Gateway::new(instance), server.configuration.clone());
        app.handle_init_modules();
        let mut proxy = safeguarded_service("paysign proxy", Listener::Proxy, app, limits, &metrics);
        proxy.add_listener(tcp_listener(&listen));
        let mut admin = safeguarded_service(
            "paysign admin",
            Listener::Admin,
            Admin { proxy_addr, live, registry: registry.clone(), ready: ready.clone() },
            admin_limits,
            &metrics,
        );
        admin.add_listener(tcp_listener(&admin_listen));
        admin.threads = Some(1);
        server.add_service(proxy);
        server.add_service(admin);
    }
    if let Some(sb) = sandbox {
        tracing::info!(
            "sandbox platform loaded {}: listen={} merchants={} platform_key=rsa-{}",
            sb.source.display(),
            sb.listen,
            sb.merchants.len(),
            sb.platform_private.public().bits()
        );
        let listen = sb.listen.clone();
        listeners.push(Listen { setting: "sandbox listen", addr: listen.clone() });
        let tls = sb.tls.clone();
        let client_ca = sb.tls_client_ca.clone();
        let service = Arc::new(SandboxService::new(sb)?);
        reloadable.push(Arc::new(SandboxReload(service.clone())));
        let mut svc = Service::new("paysign sandbox".to_string(), SandboxApp(service));
        match tls {
            Some((cert, key)) => {
                let (cert, key) = (cert.display().to_string(), key.display().to_string());
                let mut settings =
                    pingora::listeners::tls::TlsSettings::intermediate(&cert, &key).map_err(|e| format!("sandbox TLS listener: {e}"))?;
                if let Some(ca) = &client_ca {
                    settings.set_client_cert_verifier(client_verifier(ca)?);
                }
                svc.add_tls_with_settings(&listen, None, settings);
                tracing::info!(
                    "sandbox serves HTTPS on {listen}{}",
                    if client_ca.is_some() { " (client certificates required)" } else { "" }
                );
            }
            None => svc.add_tcp(&listen),
        }
        svc.threads = Some(2);
        server.add_service(svc);
    }
    // Constructed before the server runs: from here on SIGHUP cannot end the process.
    let reload = ReloadOnSighup::new(reloadable).map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    server.add_service(reload.service());
    // Sockets taken over in an upgrade are bound already (by the old process).
    if !upgrade {
        if let Err(e) = lifecycle::probe(&listeners) {
            tracing::error!("{e}");
            lifecycle::exit(1);
        }
    }
    lifecycle::announce_when_listening(listeners, ready.clone(), pid_file.clone())?;
    lifecycle::exit_when_drained(
        server.watch_execution_phase(),
        {
            let paysign = paysign.clone();
            move || paysign.as_ref().map_or(0, |p| p.live().metrics().in_flight.get() + p.live().notifications_in_flight())
        },
        move || {
            if let Some(p) = &paysign {
                p.stop_sending();
            }
        },
        drain,
        pid_file,
    )?;
    server.run(RunArgs { shutdown_signal: Box::new(Signals { upgrade_sock, ready }) });
    lifecycle::exit(0)
}
