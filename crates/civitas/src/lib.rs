//! Wiring of the Civitas binary: configuration loading, database start-up, demo seeding
//! and the HTTP server. `main.rs` parses the command line; integration tests call these
//! functions to start a real server.

pub mod bench;
pub mod bench_consent;
pub mod bench_exchange;
pub mod bench_identity;
pub mod bench_notify;
pub mod bench_services;
pub mod demo;
pub mod exchange_cli;
pub mod ledger_cli;
pub mod notify_cli;
pub mod oidc_cli;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use civitas_core::config::Config;
use civitas_ledger::{Event, Ledger, LedgerConfig, Witness};
use civitas_store::{Component, Db};
use tokio::net::TcpListener;

/// Every block's schema, in the order migrations are applied.
pub const COMPONENTS: &[Component] = &[
    civitas_ledger::COMPONENT,
    civitas_registry::COMPONENT,
    civitas_identity::COMPONENT,
    civitas_exchange::COMPONENT,
    civitas_consent::COMPONENT,
    civitas_notify::COMPONENT,
    civitas_services::COMPONENT,
];

/// The ledger's actor for actions the platform takes by itself.
pub const SYSTEM: &str = "system";
/// The ledger's actor for actions an operator takes from the command line.
pub const OPERATOR_CLI: &str = "operator:cli";

/// Sends witness requests over HTTP.
struct HttpWitnesses(reqwest::Client);

impl civitas_ledger::WitnessTransport for HttpWitnesses {
    fn add_checkpoint<'a>(
        &'a self,
        url: &'a str,
        body: String,
    ) -> civitas_ledger::witness::TransportFuture<'a> {
        Box::pin(async move {
            let res = self
                .0
                .post(format!("{}/add-checkpoint", url.trim_end_matches('/')))
                .body(body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = res.status().as_u16();
            Ok((status, res.text().await.map_err(|e| e.to_string())?))
        })
    }
}

/// Opens the ledger with the configured witnesses, and the witness role when configured.
pub async fn open_ledger(db: &Db, config: &Config) -> Result<(Ledger, Option<Witness>)> {
    let mut lc = LedgerConfig::new(&config.ledger_origin());
    // A node-local copy of the stored hashes (in the data folder `open_database` prepared
    // and locked) serves proofs and tiles without a query.
    lc.hash_file = Some(config.data_dir.join("ledger-hashes.bin"));
    lc.checkpoint_interval = std::time::Duration::from_millis(config.ledger_checkpoint_ms);
    if !config.ledger_witnesses.is_empty() {
        let witnesses = config
            .ledger_witnesses
            .iter()
            .map(|(url, key)| {
                Ok(civitas_ledger::WitnessEndpoint {
                    url: url.clone(),
                    key: civitas_ledger::TrustedCosigner::parse(key)?,
                })
            })
            .collect::<std::result::Result<Vec<_>, civitas_ledger::LedgerError>>()
            .context("ledger.witnesses")?;
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .context("cannot build the witness HTTP client")?;
        lc.witnesses = Some(civitas_ledger::WitnessPolicy {
            witnesses,
            quorum: config.ledger_witness_quorum as usize,
            transport: Arc::new(HttpWitnesses(client)),
        });
    }
    let ledger = Ledger::open(db.clone(), lc)
        .await
        .context("cannot open the ledger")?;
    let witness = match &config.witness_name {
        Some(name) => Some(
            Witness::open(db.clone(), name, &config.witness_logs)
                .await
                .context("cannot open the witness")?,
        ),
        None => None,
    };
    Ok((ledger, witness))
}

/// Opens the database and the ledger for an operator's command, refusing a schema older
/// than this build (the server migrates; commands do not).
pub async fn open_for_command(config: &Config) -> Result<(Db, Ledger)> {
    let db = open_database(config).await?;
    let status = civitas_store::schema_status(&db, COMPONENTS).await?;
    if status
        .iter()
        .any(|s| s.state() == civitas_store::SchemaState::Behind)
    {
        anyhow::bail!(
            "the database schema is older than this civitas; run `civitas migrate` first"
        );
    }
    let (ledger, _) = open_ledger(&db, config).await?;
    Ok((db, ledger))
}

/// Ends an operator's command: what it logged reaches a published checkpoint, then the
/// database closes.
pub async fn close_command(db: Db, ledger: &Ledger) {
    let size = ledger.durable_size();
    if size > 0 {
        let _ = ledger.wait_for_checkpoint(size - 1).await;
    }
    db.close().await;
}

/// Logs a platform event and returns its index.
pub async fn record(ledger: &Ledger, event: Event) -> Result<u64> {
    ledger
        .append(&event)
        .await
        .context("cannot append to the ledger")
}

/// Logs the effective configuration (its hash, secrets masked first) when it differs from
/// the last one logged, so every configuration change is on the record.
pub async fn record_config(
    ledger: &Ledger,
    entries: &[(&'static str, String, civitas_core::config::Source)],
) -> Result<Option<u64>> {
    use sha2::Digest;
    let mut text = String::new();
    for (k, v, _) in entries {
        text.push_str(&format!("{k}={v}\n"));
    }
    let digest = civitas_ledger::event::hex(&sha2::Sha256::digest(text.as_bytes()));
    let last = ledger.latest_of_kind("platform.config_applied").await?;
    if last.is_some_and(|(_, e)| {
        e.public.get("config_sha256").and_then(|v| v.as_str()) == Some(digest.as_str())
    }) {
        return Ok(None);
    }
    let keys: Vec<&str> = entries
        .iter()
        .filter(|(_, _, s)| *s != civitas_core::config::Source::Default)
        .map(|(k, _, _)| *k)
        .collect();
    let event = Event::new("platform.config_applied", SYSTEM, "config")
        .with("config_sha256", digest)
        .with("set_keys", keys);
    Ok(Some(record(ledger, event).await?))
}

/// The async runtime that runs a server's requests on `workers` threads (`0`: one per CPU
/// core). With one, they run on the thread that starts the server, under Tokio's
/// current-thread scheduler: against a multi-thread scheduler with one worker, each
/// gateway of `civitas bench exchange` spent less CPU a call (docs/BENCHMARKS.md).
pub fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match workers {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if workers > 0 {
                b.worker_threads(workers);
            }
            b
        }
    };
    builder.enable_all().build()
}

/// Makes sure the data folder exists and can be written to.
pub fn prepare_data_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("the data folder {} cannot be created: {e}", dir.display()))?;
    let probe = dir.join(".civitas-write-check");
    std::fs::write(&probe, b"ok")
        .map_err(|e| anyhow::anyhow!("the data folder {} is not writable: {e}", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Takes an exclusive lock on the data folder for the life of this process, so that two
/// `civitas` processes never write the same SQLite database (and its ledger) at once. The
/// operating system releases it when the process ends, however it ends.
pub fn lock_data_dir(dir: &Path) -> Result<()> {
    static HELD: std::sync::Mutex<Vec<(std::path::PathBuf, std::fs::File)>> =
        std::sync::Mutex::new(Vec::new());
    let canonical = dir
        .canonicalize()
        .map_err(|e| anyhow::anyhow!("the data folder {} cannot be opened: {e}", dir.display()))?;
    let mut held = HELD
        .lock()
        .map_err(|_| anyhow::anyhow!("the data-folder lock table is poisoned"))?;
    if held.iter().any(|(p, _)| *p == canonical) {
        return Ok(());
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(canonical.join("civitas.lock"))
        .map_err(|e| anyhow::anyhow!("cannot create the lock file in {}: {e}", dir.display()))?;
    match file.try_lock() {
        Ok(()) => {
            held.push((canonical, file));
            Ok(())
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(anyhow::anyhow!(
            "the data folder {} is in use by another civitas process; stop that one first or give this one its own --data",
            dir.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(anyhow::anyhow!(
            "cannot lock the data folder {}: {e}",
            dir.display()
        )),
    }
}

/// Binds the listening socket, with a clear message when the port is taken.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            anyhow::anyhow!(
                "port {} on {} is already in use by another program; choose another with --listen",
                addr.port(),
                addr.ip()
            )
        }
        _ => anyhow::anyhow!("cannot listen on {addr}: {e}"),
    })
}

/// Prepares and locks the data folder, connects to the configured database (SQLite in the
/// data folder by default) and refuses a schema newer than this build.
pub async fn open_database(config: &Config) -> Result<Db> {
    // The data folder holds the SQLite database and, on either engine, this node's copy of
    // the ledger's hashes: one process owns it.
    prepare_data_dir(&config.data_dir)?;
    lock_data_dir(&config.data_dir)?;
    let url = config.database_url();
    let db = Db::connect(&url, config.max_connections).await?;
    let status = civitas_store::schema_status(&db, COMPONENTS).await?;
    civitas_store::refuse_newer(&status)?;
    Ok(db)
}

/// Logs migrations that were applied, as one platform event.
pub async fn record_migrations(
    ledger: &Ledger,
    actor: &str,
    applied: &[(String, i64, String)],
) -> Result<()> {
    if applied.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = applied
        .iter()
        .map(|(c, v, _)| format!("{c} v{v}"))
        .collect();
    record(
        ledger,
        Event::new("platform.schema_migrated", actor, "schema").with("applied", list),
    )
    .await?;
    Ok(())
}

/// Opens the database, applies migrations when `auto_migrate` is on, opens the ledger and
/// logs the start-up's consequential events (migrations, a changed configuration).
pub async fn start(
    config: &Config,
    entries: &[(&'static str, String, civitas_core::config::Source)],
) -> Result<Running> {
    let db = open_database(config).await?;
    let applied = if config.auto_migrate {
        civitas_store::migrate(&db, COMPONENTS).await?
    } else {
        Vec::new()
    };
    let status = civitas_store::schema_status(&db, COMPONENTS).await?;
    if let Some(s) = status
        .iter()
        .find(|s| s.component == "ledger" && s.state() != civitas_store::SchemaState::Current)
    {
        anyhow::bail!(
            "the ledger's schema is at version {} but this build needs {}; run `civitas migrate` first",
            s.applied,
            s.known
        );
    }
    let (ledger, witness) = open_ledger(&db, config).await?;
    record_migrations(&ledger, SYSTEM, &applied).await?;
    record_config(&ledger, entries).await?;
    prepare_signing_keys(&db, &ledger).await?;
    Ok(Running {
        db,
        ledger,
        witness,
    })
}

/// The identity block as configured: session timeouts and, when `identity.dev_mail_sink` is
/// on, the development mail sink as its courier.
pub fn identity_for(
    db: &Db,
    ledger: &Ledger,
    config: &Config,
    own_messages: Option<civitas_notify::own::OwnMessages>,
) -> (
    civitas_identity::Identity,
    Option<civitas_identity::MailSink>,
) {
    let settings = civitas_identity::IdentitySettings {
        timeouts: civitas_identity::session::Timeouts {
            idle_ms: config.session_idle_mins as i64 * 60_000,
            absolute_ms: config.session_max_hours as i64 * 3_600_000,
        },
        issuer_name: "Civitas".into(),
        passkeys: passkeys_for(&config.base_url()),
    };
    let sink = config
        .dev_mail_sink
        .then(|| civitas_identity::MailSink::new(db.clone()));
    // The development sink when asked for; otherwise Notify, when it can deliver.
    let courier = match (&sink, own_messages) {
        (Some(s), _) => Some(Arc::new(s.clone()) as Arc<dyn civitas_identity::Courier>),
        (None, Some(own)) => {
            Some(Arc::new(ThroughNotify(own)) as Arc<dyn civitas_identity::Courier>)
        }
        (None, None) => None,
    };
    (
        civitas_identity::Identity::new(db.clone(), ledger.clone(), settings, courier),
        sink,
    )
}

/// Identity's one-time codes and alerts, sent through Notify as Civitas's own messages.
struct ThroughNotify(civitas_notify::own::OwnMessages);

impl civitas_identity::Courier for ThroughNotify {
    fn send<'a>(
        &'a self,
        to: &'a str,
        subject: &'a str,
        body: &'a str,
    ) -> civitas_identity::SendFuture<'a> {
        Box::pin(async move {
            self.0
                .send(to, subject, body)
                .await
                .map(|_| ())
                .map_err(|e| {
                    tracing::error!(error = %e, "a message of Civitas's own could not be queued");
                    civitas_identity::IdentityError::NoCourier
                })
        })
    }
}

/// The passkey relying party for a site served at `base_url`: its host is the relying-party
/// id and the URL the origin. `None` when the host is an IP address (WebAuthn refuses those
/// as relying-party ids; use a name such as `localhost`) or the URL cannot be used.
pub fn passkeys_for(base_url: &str) -> Option<civitas_identity::passkey::Passkeys> {
    let url = match url::Url::parse(base_url) {
        Ok(u) => u,
        Err(e) => {
            tracing::info!(base_url, error = %e, "passkeys are off: the public URL cannot be parsed");
            return None;
        }
    };
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        _ => {
            // Said once per process: the demo builds the identity block twice.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::info!(
                    base_url,
                    "passkeys are off: the site's address is an IP address, which WebAuthn refuses as a relying party; set public_url to a name (such as http://localhost:PORT)"
                );
            });
            return None;
        }
    };
    let origin = url::Url::parse(&url.origin().ascii_serialization()).ok()?;
    match civitas_identity::passkey::Passkeys::new(&host, &origin, "Civitas") {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::info!(base_url, error = %e, "passkeys are off");
            None
        }
    }
}

/// Makes the OpenID Connect signing keys before the server says it is running: generating
/// an RSA key takes a moment, and a server that announced itself should answer at once
/// (and stop cleanly when told to).
pub async fn prepare_signing_keys(db: &Db, ledger: &Ledger) -> Result<()> {
    civitas_identity::oidc::Provider::new(
        db.clone(),
        ledger.clone(),
        civitas_identity::oidc::Settings::new("urn:civitas:setup"),
    )
    .ensure_keys()
    .await
    .context("cannot prepare the OpenID Connect signing keys")
}

/// Everything a running server holds. [`start`] and [`demo::prepare`] make it, with the
/// schema current and the signing keys in place.
pub struct Running {
    /// The database.
    pub db: Db,
    /// The ledger.
    pub ledger: Ledger,
    /// The witness role, if configured.
    pub witness: Option<Witness>,
}

/// Serves HTTP on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// for the configured grace period.
pub async fn serve(
    listener: TcpListener,
    running: Running,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let grace = std::time::Duration::from_secs(config.shutdown_grace_secs);
    let Running {
        db,
        ledger,
        witness,
    } = running;
    // The issuer is the public URL; a test server on port 0 is known by its bound address.
    let issuer = match (&config.public_url, listener.local_addr()) {
        (None, Ok(addr)) if config.listen.port() == 0 => format!("http://{addr}"),
        _ => config.base_url(),
    };
    let exchange =
        civitas_exchange::Directory::new(db.clone(), ledger.clone(), &config.exchange_instance);
    let smtp = config
        .notify_smtp_url
        .as_deref()
        .map(|url| civitas_notify::delivery::Smtp::new(url, &config.notify_from))
        .transpose()?;
    let (state, purger) =
        app_state(db.clone(), ledger, witness, config, &issuer, exchange, None).await?;
    // Notify's deliverers: e-mail when an SMTP server is configured, text messages and
    // letters when a provider is, and the services' status callbacks. At shutdown each
    // finishes the message it is sending and gives its batch back, before the database
    // closes.
    use civitas_notify::{Channel, delivery::Carrier};
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut carriers: Vec<(Channel, Carrier)> = Vec::new();
    if let Some(smtp) = smtp {
        carriers.push((Channel::Email, Carrier::Smtp(smtp)));
    }
    if let Some(p) = &state.notify_provider {
        for channel in [Channel::Sms, Channel::Letter] {
            if p.serves(channel) {
                carriers.push((channel, Carrier::Provider(p.clone())));
            }
        }
    }
    let mut deliverers: Vec<tokio::task::JoinHandle<()>> = carriers
        .into_iter()
        .map(|(channel, carrier)| {
            tokio::spawn(
                state
                    .notify
                    .clone()
                    .deliver(channel, carrier, stopping.clone()),
            )
        })
        .collect();
    deliverers.push(tokio::spawn(
        state.notify.clone().deliver_callbacks(stopping.clone()),
    ));
    deliverers.push(tokio::spawn(watch_deadlines(
        state.services.clone(),
        state.identity.clone(),
        stopping,
    )));
    let before_close = async move {
        let _ = stop.send(true);
        for d in deliverers {
            let abort = d.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(35), d)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    };
    let app = civitas_web::app(state);
    let outcome = serve_app(listener, app, db, grace, shutdown, before_close).await;
    if let Some(p) = purger {
        p.abort();
    }
    outcome
}

/// Every minute, reminds the staff member who holds a case due within a day, and tells the
/// agency's supervisors of a case past its date (each once; the escalation is in the
/// ledger). Messages name the case's reference and service, never the applicant.
async fn watch_deadlines(
    services: civitas_services::Services,
    identity: civitas_identity::Identity,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use civitas_identity::StaffRole;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
        }
        let due = match services
            .check_deadlines(civitas_ledger::event::now_ms())
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check the cases' due dates");
                continue;
            }
        };
        for d in due {
            let name = services
                .current()
                .catalog
                .service(&d.case.service_id)
                .map(|s| s.name.clone())
                .unwrap_or_default();
            // A case nobody has taken is the supervisors' to hand out.
            let assignee = match (&d.case.assignee, d.escalated) {
                (Some(a), false) => identity.account(a).await.ok().flatten(),
                _ => None,
            };
            let to = match assignee {
                Some(a) => vec![a],
                None => identity
                    .staff_of(&d.case.agency, StaffRole::Supervisor)
                    .await
                    .unwrap_or_default(),
            };
            let (subject, body) = if d.escalated {
                (
                    format!("案件逾期 A case is past its date: {}", name.zh),
                    format!(
                        "「{}」的一件案件已超過處理期限，請至工作台指派或處理。\nA {} case is past its date: assign or decide it in the console.\n/console/cases/{}",
                        name.zh, name.en, d.case.id
                    ),
                )
            } else {
                (
                    format!("案件明日到期 A case is due tomorrow: {}", name.zh),
                    format!(
                        "您負責的「{}」案件將於一天內到期。\nA {} case of yours is due within a day.\n/console/cases/{}",
                        name.zh, name.en, d.case.id
                    ),
                )
            };
            for account in to {
                if let Err(e) = identity.tell_staff(&account, &subject, &body).await {
                    tracing::warn!(error = %e, case = %d.case.id, "a staff member could not be told of a due date");
                }
            }
        }
    }
}

/// What the server's handlers reach, for either role, and the body archive's purger when
/// the archive is on.
async fn app_state(
    db: Db,
    ledger: Ledger,
    witness: Option<Witness>,
    config: Config,
    issuer: &str,
    exchange: civitas_exchange::Directory,
    gateway_role: Option<Arc<civitas_web::exchange_peer::GatewayRole>>,
) -> Result<(civitas_web::AppState, Option<tokio::task::JoinHandle<()>>)> {
    // A gateway serves no consent routes; the block is there because every node has it.
    let consents = civitas_consent::Consents::open(db.clone(), ledger.clone(), issuer).await?;
    // Consent decisions answer from memory on SQLite; fill it without delaying the start.
    let warming = consents.clone();
    tokio::spawn(async move {
        if let Err(e) = warming.warm().await {
            tracing::warn!(error = %e, "cannot read the consent records into memory; decisions read them as they come");
        }
    });
    let notify = civitas_notify::Notify::with_rate_limit(
        db.clone(),
        ledger.clone(),
        config.notify_rate_limit_per_minute,
    );
    // Civitas's own messages go through Notify when it has a way to deliver them.
    let own_messages = match (
        config.dev_mail_sink,
        config.notify_smtp_url.is_some() || config.notify_sms.is_some(),
    ) {
        (false, true) => Some(
            notify
                .own_messages(
                    config.notify_smtp_url.is_some(),
                    config.notify_sms.is_some(),
                )
                .await?,
        ),
        _ => None,
    };
    let (identity, mail_sink) = identity_for(&db, &ledger, &config, own_messages);
    let oidc = civitas_identity::oidc::Provider::new(
        db.clone(),
        ledger.clone(),
        civitas_identity::oidc::Settings::new(issuer),
    );
    let archive = archive_key(&config)?;
    let purger = archive
        .is_some()
        .then(|| tokio::spawn(purge_archive(db.clone(), ledger.clone())));
    let notify_provider = notify_provider(&config, issuer)?;
    let uploads = match &config.uploads_s3 {
        Some(bucket) => civitas_services::uploads::s3_store(bucket).await?,
        None => civitas_services::uploads::local_store(&config.data_dir.join("uploads"))?,
    };
    let services = civitas_services::Services::open(db.clone(), ledger.clone())
        .await?
        .with_uploads(uploads);
    let state = civitas_web::AppState {
        db,
        config: Arc::new(config),
        components: COMPONENTS,
        ledger,
        witness,
        identity,
        oidc,
        mail_sink,
        exchange,
        consents,
        notify,
        notify_provider,
        gateway: provider_client()?,
        information_systems: civitas_web::hop::Hop::to_information_systems(),
        gateway_role,
        gateway_polls: civitas_web::exchange_peer::Polls::default(),
        archive,
        registers: Default::default(),
        services,
        service_senders: Default::default(),
    };
    Ok((state, purger))
}

/// Notify's providers of text messages and letters, when either is configured; the
/// sandbox is this server's own `/sandbox/sms` and `/sandbox/letters`.
fn notify_provider(
    config: &Config,
    issuer: &str,
) -> Result<Option<civitas_notify::provider::Provider>> {
    use civitas_core::config::ProviderEndpoint;
    let at = |e: &Option<ProviderEndpoint>, sandbox: &str| match e {
        None => None,
        Some(ProviderEndpoint::Sandbox) => Some(format!("{issuer}{sandbox}")),
        Some(ProviderEndpoint::Url(u)) => Some(u.clone()),
    };
    let (sms, letters) = (
        at(&config.notify_sms, "/sandbox/sms"),
        at(&config.notify_letters, "/sandbox/letters"),
    );
    if sms.is_none() && letters.is_none() {
        return Ok(None);
    }
    // Only the sandbox may go without a configured secret (the configuration checks it):
    // this process then makes one, which it alone uses both ways.
    let secret = config
        .notify_provider_secret
        .clone()
        .unwrap_or_else(civitas_notify::provider::random_secret);
    Ok(Some(civitas_notify::provider::Provider::new(
        sms.as_deref(),
        letters.as_deref(),
        secret.as_bytes(),
    )?))
}

/// The body archive's key, when the archive is on (`exchange.archive_days`).
fn archive_key(config: &Config) -> Result<Option<Arc<civitas_exchange::archive::ArchiveKey>>> {
    if config.exchange_archive_days == 0 {
        return Ok(None);
    }
    let key = civitas_exchange::archive::ArchiveKey::load_or_create(&config.data_dir)?;
    Ok(Some(Arc::new(key)))
}

/// Deletes archived bodies whose time is over, every minute, and logs how many went.
async fn purge_archive(db: Db, ledger: Ledger) {
    loop {
        match civitas_exchange::archive::purge(&db, civitas_ledger::event::now_ms()).await {
            Ok(0) => {}
            Ok(n) => {
                let event = Event::new("exchange.archive_purged", SYSTEM, "exchange/archive")
                    .with("records", n);
                if let Err(e) = ledger.append(&event).await {
                    tracing::error!(error = %e, "cannot log the archive's purge");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot purge the exchange archive"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    }
}

/// The HTTP client Notify calls its providers with: it passes redirects back as they are,
/// and never gives up on a slow body; a stalled connection ends when a read waits too long.
fn provider_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(5))
        .read_timeout(std::time::Duration::from_secs(60))
        .build()
        .context("cannot build the gateway's HTTP client")
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish for `grace`, and closes the database.
async fn serve_app(
    listener: TcpListener,
    app: axum::Router,
    db: Db,
    grace: std::time::Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
    before_close: impl Future<Output = ()>,
) -> Result<()> {
    let stopping = Arc::new(tokio::sync::Notify::new());
    let notify = stopping.clone();
    // Answers are written whole; Nagle's algorithm would only hold back their last segment.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing requests in flight");
        notify.notify_one();
    });
    let outcome = tokio::select! {
        r = server => r.context("the HTTP server failed"),
        () = async { stopping.notified().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_secs = grace.as_secs(), "grace period over; exiting with requests still in flight");
            Ok(())
        }
    };
    before_close.await;
    db.close().await;
    tracing::info!("stopped");
    outcome
}

/// Serves an exchange gateway (`role = "gateway"`): the gateway for its member's
/// information systems on `listener`, and the mutual-TLS listener for other gateways on
/// `peers`, with the directory's signed configuration polled in the background.
pub async fn serve_gateway(
    listener: TcpListener,
    peers: TcpListener,
    running: Running,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let settings = config
        .exchange_gateway
        .clone()
        .context("a gateway needs its exchange settings")?;
    let grace = std::time::Duration::from_secs(config.shutdown_grace_secs);
    let Running {
        db,
        ledger,
        witness,
    } = running;
    let member = civitas_core::xroad::MemberId::parse(&settings.member)?;
    let keys = civitas_exchange::keys::GatewayKeys::load_or_create(&config.data_dir)?;
    let anchor = civitas_exchange::Anchor {
        instance: config.exchange_instance.clone(),
        key: settings.anchor_key.clone(),
    };
    civitas_exchange::configuration::parse_key(&anchor.key).context("exchange.anchor_key")?;
    let exchange = civitas_exchange::Directory::remote(
        db.clone(),
        ledger.clone(),
        anchor,
        std::time::Duration::from_secs(settings.stale_grace_secs),
    );
    let tls = civitas_exchange::tls::server_config(
        &keys,
        civitas_web::exchange_peer::admits(exchange.clone()),
    )?;
    let link = DirectoryLink::new(&settings, &member, &keys.signing)?;
    let poller = tokio::spawn(poll_configuration(exchange.clone(), link.clone()));
    let reporter = tokio::spawn(send_tracker_reports(db.clone(), link));
    let role = Arc::new(civitas_web::exchange_peer::GatewayRole::new(member, keys));
    let issuer = config.base_url();
    let (state, purger) = app_state(
        db.clone(),
        ledger,
        witness,
        config,
        &issuer,
        exchange,
        Some(role),
    )
    .await?;
    let (local, peer_app) = civitas_web::gateway_apps(state);
    let (stop_peers, stopped) = tokio::sync::oneshot::channel::<()>();
    let peer_server = tokio::spawn(civitas_web::exchange_peer::serve_peers(
        peers,
        peer_app,
        Arc::new(tls),
        async move {
            let _ = stopped.await;
        },
    ));
    let outcome = serve_app(listener, local, db, grace, shutdown, async {}).await;
    let _ = stop_peers.send(());
    let _ = peer_server.await;
    poller.abort();
    reporter.abort();
    if let Some(p) = purger {
        p.abort();
    }
    outcome
}

/// How a gateway speaks to the directory: its address, an HTTP client, and who the gateway
/// is (its member and message key, for the claims it sends).
#[derive(Clone)]
struct DirectoryLink {
    client: reqwest::Client,
    base: String,
    member: civitas_core::xroad::MemberId,
    key: civitas_exchange::keys::SigningKey,
    every: std::time::Duration,
}

impl DirectoryLink {
    fn new(
        settings: &civitas_core::config::GatewaySettings,
        member: &civitas_core::xroad::MemberId,
        key: &civitas_exchange::keys::SigningKey,
    ) -> Result<DirectoryLink> {
        Ok(DirectoryLink {
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .context("cannot build the client for the directory")?,
            base: settings.directory_url.clone(),
            member: member.clone(),
            key: key.clone(),
            every: std::time::Duration::from_secs(settings.poll_secs),
        })
    }

    /// Who is calling, signed, as of now (`Civitas-Gateway`).
    fn claim(&self, held_version: u64) -> String {
        civitas_exchange::configuration::poll_claim(
            &self.member,
            &self.key,
            held_version,
            civitas_ledger::event::now_ms(),
        )
    }
}

/// Fetches the directory's signed configuration every `poll_secs` and installs it; a
/// failure is noted for the alarms, and the configuration held keeps serving.
async fn poll_configuration(exchange: civitas_exchange::Directory, link: DirectoryLink) {
    let url = format!("{}/exchange/v1/configuration", link.base);
    let mut last_version = None;
    loop {
        let held = exchange
            .installed()
            .map(|s| s.configuration().version)
            .unwrap_or_default();
        let fetched = async {
            let res = link
                .client
                .get(&url)
                .header("civitas-gateway", link.claim(held))
                .send()
                .await
                .map_err(|e| format!("the directory does not answer: {}", e.without_url()))?;
            if !res.status().is_success() {
                return Err(format!("the directory answered {}", res.status()));
            }
            let text = res.text().await.map_err(|e| e.to_string())?;
            exchange.install(&text).map_err(|e| e.to_string())
        };
        match fetched.await {
            Ok(version) => {
                if last_version != Some(version) {
                    tracing::info!(version, "exchange configuration installed");
                    last_version = Some(version);
                }
            }
            Err(why) => {
                tracing::warn!(reason = %why, "cannot refresh the exchange configuration");
                exchange.fetch_failed(&why);
            }
        }
        tokio::time::sleep(link.every).await;
    }
}

/// Sends the tracker reports waiting in the outbox to the directory, signed, and removes
/// those it recorded; what cannot be sent waits for the next round.
async fn send_tracker_reports(db: Db, link: DirectoryLink) {
    let url = format!("{}/exchange/v1/tracker", link.base);
    loop {
        let sent = async {
            let mut reports = civitas_exchange::tracker::pending(&db, 200)
                .await
                .map_err(|e| e.to_string())?;
            // At most about 256 KiB a batch, well under what the directory takes.
            let mut bytes = 0;
            let keep = reports
                .iter()
                .take_while(|r| {
                    bytes += serde_json::to_vec(r).map_or(0, |v| v.len());
                    bytes <= 256 * 1024
                })
                .count()
                .max(1);
            reports.truncate(keep);
            if reports.is_empty() {
                return Ok(0);
            }
            let body = serde_json::to_vec(&reports).map_err(|e| e.to_string())?;
            let res = link
                .client
                .post(&url)
                .header("civitas-gateway", link.claim(0))
                .header(
                    "civitas-signature",
                    civitas_exchange::configuration::sign_body(&link.key, &body),
                )
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| format!("the directory does not answer: {}", e.without_url()))?;
            if !res.status().is_success() {
                return Err(format!(
                    "the directory answered {}: {}",
                    res.status(),
                    res.text().await.unwrap_or_default()
                ));
            }
            let ids: Vec<String> = reports.into_iter().map(|r| r.id).collect();
            civitas_exchange::tracker::sent(&db, &ids)
                .await
                .map_err(|e| e.to_string())?;
            Ok(ids.len())
        };
        match sent.await {
            // A batch sent: more may be waiting.
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(why) => {
                tracing::warn!(reason = %why, "cannot send tracker reports to the directory")
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Resolves when the process receives SIGTERM or Ctrl-C. The handlers are installed when
/// this is called, not when the future is first polled: a process that has said where it
/// listens may be told to stop at once, while it is still building its state.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (term, int) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(term) => {},
                () = wait(int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn one_worker_runs_every_task_on_the_thread_that_started_the_runtime() {
        let rt = super::runtime(1).unwrap();
        assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        let here = std::thread::current().id();
        let ran_on =
            rt.block_on(async { tokio::spawn(async { std::thread::current().id() }).await });
        assert_eq!(ran_on.unwrap(), here);
        assert_eq!(rt.metrics().num_workers(), 1);
    }

    #[test]
    fn more_workers_or_none_set_make_a_pool_of_that_many_or_one_per_core() {
        let rt = super::runtime(3).unwrap();
        assert_eq!(rt.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(rt.metrics().num_workers(), 3);
        let here = std::thread::current().id();
        let ran_on =
            rt.block_on(async { tokio::spawn(async { std::thread::current().id() }).await });
        assert_ne!(ran_on.unwrap(), here);
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(super::runtime(0).unwrap().metrics().num_workers(), cores);
    }
}
