//! Starting and stopping a whole bridge: store, engine and HTTP server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::engine::{Engine, Inbound};
use crate::sip::SipUa;
use crate::store::Store;

/// How to run a bridge.
#[derive(Debug, Clone)]
pub struct Options {
    /// HTTP listen address (port 0 picks a free one).
    pub http: SocketAddr,
    /// Where the database and recordings live.
    pub data_dir: PathBuf,
    /// The API token; when absent one is generated at first start.
    pub api_token: Option<String>,
    /// SIP listen address (UDP and TCP); `None` runs without SIP.
    pub sip: Option<SocketAddr>,
    /// The configuration.
    pub config: Config,
}

/// A running bridge.
pub struct Running {
    /// Where the HTTP API listens.
    pub addr: SocketAddr,
    /// Where SIP listens, if it runs.
    pub sip_addr: Option<SocketAddr>,
    /// The engine.
    pub engine: Arc<Engine>,
    /// A token generated at this start (first start without `--api-token`).
    pub generated_token: Option<String>,
    stop: oneshot::Sender<()>,
    http: JoinHandle<()>,
    /// The data directory's lock, held while the bridge runs.
    _lock: std::fs::File,
}

const TOKEN_KEY: &str = "api_token_sha256";

/// Opens the store, recovers calls from the last run, and starts serving.
pub async fn start(opts: Options) -> anyhow::Result<Running> {
    // rustls needs one process-wide crypto provider; ring is the one we build.
    let _ = rustls::crypto::ring::default_provider().install_default();
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("cannot create data dir {}", opts.data_dir.display()))?;
    let lock = lock_data_dir(&opts.data_dir)?;
    let store = Arc::new(
        Store::open(&opts.data_dir.join("bridge.db"))
            .with_context(|| format!("cannot open the database in {}", opts.data_dir.display()))?,
    );

    let mut generated_token = None;
    let token_hash = match &opts.api_token {
        Some(t) => {
            anyhow::ensure!(!t.trim().is_empty(), "the API token must not be empty");
            let h = api::hash_token(t);
            store.set_setting(TOKEN_KEY, &hex::encode(h))?;
            h
        }
        None => match store.setting(TOKEN_KEY)? {
            Some(h) => {
                let mut out = [0u8; 32];
                hex::decode_to_slice(h.trim(), &mut out)
                    .context("the stored API token hash is damaged; start once with --api-token")?;
                out
            }
            None => {
                let token = hex::encode(rand::random::<[u8; 24]>());
                let h = api::hash_token(&token);
                store.set_setting(TOKEN_KEY, &hex::encode(h))?;
                generated_token = Some(token);
                h
            }
        },
    };

    let engine = Engine::new(
        opts.config.clone(),
        store.clone(),
        opts.data_dir.join("recordings"),
    )?;
    engine.start_load_probe();
    if let Some(sip_addr) = opts.sip {
        let (ua, incoming) = SipUa::start(opts.config.sip.clone(), sip_addr).await?;
        engine.set_sip(ua.clone());
        tokio::spawn(
            ua.clone()
                .serve_incoming(incoming, Arc::new(Inbound(engine.clone()))),
        );
    }
    let resumed = engine.resume_scheduled()?;
    if resumed > 0 {
        tracing::info!("{resumed} scheduled call(s) from the last run scheduled again");
    }

    let listener = tokio::net::TcpListener::bind(opts.http)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", opts.http))?;
    let addr = listener.local_addr()?;
    let tls = match (
        &opts.config.server.tls_cert_file,
        &opts.config.server.tls_key_file,
    ) {
        (Some(cert), Some(key)) => Some(api::listener::tls_config(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = api::listener::ApiListener::new(listener, tls)?;
    let public_url = opts
        .config
        .server
        .public_url
        .clone()
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| {
            // A wildcard listen address is no place to fetch from: name the host.
            if addr.ip().is_unspecified() {
                format!("{scheme}://localhost:{}", addr.port())
            } else {
                format!("{scheme}://{addr}")
            }
        });
    let app = api::router(Arc::new(AppState {
        engine: engine.clone(),
        token_hash,
        public_url,
    }));
    let (stop, stopped) = oneshot::channel::<()>();
    let http = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!("HTTP server failed: {e}");
        }
    });
    let sip_addr = engine.sip().map(|u| u.local_addr());
    Ok(Running {
        addr,
        sip_addr,
        engine,
        generated_token,
        stop,
        http,
        _lock: lock,
    })
}

/// Takes the data directory for this process: a second bridge on the same
/// directory would end the first one's live calls as "restarted" and dial
/// its scheduled calls twice. The lock goes with the process (even on
/// `kill -9`).
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("bridge.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another bridge is running on the data directory {} (it holds {}); \
             stop it, or give this one its own --data-dir",
            dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

impl Running {
    /// Ends live calls at once (reason `shutdown`), then stops the HTTP server.
    pub async fn stop(self) {
        self.stop_after(Duration::ZERO).await;
    }

    /// Stops the way SIGTERM asks: new calls are refused (API and SIP 503),
    /// live calls may go on for `[server] drain_secs`, then the rest end
    /// (reason `shutdown`), recordings and call logs are finished, and the
    /// HTTP server stops.
    pub async fn drain_and_stop(self) {
        let drain = Duration::from_secs(self.engine.config().server.drain_secs);
        self.stop_after(drain).await;
    }

    async fn stop_after(self, drain: Duration) {
        self.engine.shutdown(drain, Duration::from_secs(10)).await;
        if let Some(ua) = self.engine.sip() {
            ua.shutdown();
        }
        let _ = self.stop.send(());
        let _ = self.http.await;
    }
}
