//! Civitas configuration: defaults, then a TOML file, then `CIVITAS_*` environment
//! variables, then command-line flags, each layer overriding the one before.
//!
//! Every value remembers where it came from, so an error names the file, variable or flag
//! to fix, and `civitas config check` shows the effective configuration with its sources.
//! This module parses text it is handed; reading files and the environment is the caller's job.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The effective configuration of a Civitas process.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Folder for the SQLite database, uploads and keys.
    pub data_dir: PathBuf,
    /// Database URL; `None` means SQLite in `data_dir`.
    pub database: Option<String>,
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Public base URL printed and used in links; derived from `listen` when unset.
    pub public_url: Option<String>,
    /// Log output: human-readable text or one JSON object per line.
    pub log_format: LogFormat,
    /// Log filter, in `tracing` directive syntax (`info`, `civitas=debug`, ...).
    pub log_level: String,
    /// Apply pending migrations when the server starts.
    pub auto_migrate: bool,
    /// Largest number of database connections in the pool.
    pub max_connections: u32,
    /// Seconds the server waits for in-flight requests after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// Threads that run requests (the async runtime's workers); 0: one per CPU core. Fewer
    /// where several servers share a machine's cores; with 1, the server's main thread runs
    /// them all (Tokio's current-thread scheduler).
    pub workers: usize,
    /// Seed of the demo country's generator.
    pub demo_seed: u64,
    /// Number of people in the demo country's population register.
    pub demo_citizens: u64,
    /// Reference date of the demo country (`YYYY-MM-DD`); today when unset.
    pub demo_as_of: Option<String>,
    /// The ledger's origin (its name in checkpoints); derived from the public URL when unset.
    pub ledger_origin: Option<String>,
    /// Longest time in milliseconds between an append and a checkpoint covering it.
    pub ledger_checkpoint_ms: u64,
    /// The X-Road instance the exchange's identifiers belong to (`exchange.instance`).
    pub exchange_instance: String,
    /// Witnesses that cosign the ledger's checkpoints: `URL VERIFIER-KEY` pairs.
    pub ledger_witnesses: Vec<(String, String)>,
    /// How many witnesses must cosign before a checkpoint is published.
    pub ledger_witness_quorum: u64,
    /// When set, this instance is a witness under this name.
    pub witness_name: Option<String>,
    /// Verifier keys of the logs this instance witnesses.
    pub witness_logs: Vec<String>,
    /// Minutes without activity after which a sign-in session ends.
    pub session_idle_mins: u64,
    /// Hours after sign-in at which a session ends, however active.
    pub session_max_hours: u64,
    /// What this process serves: everything, or only an exchange gateway.
    pub role: Role,
    /// Seconds a signed exchange configuration is valid for (the directory's setting).
    pub exchange_configuration_validity_secs: u64,
    /// Days the encrypted body archive keeps each call's bodies; 0 keeps none.
    pub exchange_archive_days: u64,
    /// The gateway's settings, when `role` is `gateway`.
    pub exchange_gateway: Option<GatewaySettings>,
    /// Keep outgoing messages (one-time codes, alerts) in a development mail sink shown at
    /// `/dev/mail` instead of sending them. For demos and tests only.
    pub dev_mail_sink: bool,
    /// Where Notify sends e-mail: `smtp://host:port` (plain, for a relay on this network),
    /// `smtp://host:port?tls=required` (STARTTLS) or `smtps://host:port`, with
    /// `user:password@` when the server wants it. `None`: e-mail from live and team keys
    /// waits, `created`.
    pub notify_smtp_url: Option<String>,
    /// The sender address of Notify's e-mail.
    pub notify_from: String,
    /// Calls a minute each Notify service may make with each key type (Notify: 3,000).
    pub notify_rate_limit_per_minute: u32,
    /// Where Notify hands text messages: a provider's `http(s)://` endpoint, or the
    /// built-in sandbox provider. `None`: text messages from live and team keys wait.
    pub notify_sms: Option<ProviderEndpoint>,
    /// Where Notify hands letters (their PDFs): a print provider, or the sandbox.
    pub notify_letters: Option<ProviderEndpoint>,
    /// The secret Notify shares with its providers, signing what goes either way; `None`
    /// (only with the sandbox): a random one for this process.
    pub notify_provider_secret: Option<String>,
    /// Where uploaded files are kept: `None` is the local folder `<data_dir>/uploads`.
    pub uploads_s3: Option<S3Bucket>,
}

/// An S3-compatible bucket (AWS S3, MinIO, Ceph, Garage, ...) that keeps uploaded files.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Bucket {
    /// The bucket's name (`uploads.s3_bucket`).
    pub bucket: String,
    /// The store's URL (`uploads.s3_endpoint`); `None` is AWS S3 in `region`.
    pub endpoint: Option<String>,
    /// The region the requests are signed for (`uploads.s3_region`).
    pub region: String,
    /// The access key (`uploads.s3_access_key_id`); `None`: the usual `AWS_*` environment
    /// variables or the machine's role.
    pub access_key_id: Option<String>,
    /// Its secret (`uploads.s3_secret_access_key`).
    pub secret_access_key: Option<String>,
}

impl fmt::Debug for S3Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Bucket")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "****"),
            )
            .finish()
    }
}

/// Where Notify hands a channel's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderEndpoint {
    /// The built-in sandbox provider, which takes the message over HTTP and sends its
    /// receipts back as a real provider would, delivering nothing.
    Sandbox,
    /// A provider at this URL.
    Url(String),
}

/// What a process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The whole platform, its exchange gateway included (the default).
    All,
    /// Only an exchange gateway of one member, configured from the directory.
    Gateway,
}

/// An exchange gateway's settings (`role = "gateway"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    /// The member whose information systems it serves (`exchange.gateway_member`).
    pub member: String,
    /// The directory's base URL, polled for the signed configuration (`exchange.directory_url`).
    pub directory_url: String,
    /// The directory's configuration key, base64 (`exchange.anchor_key`).
    pub anchor_key: String,
    /// Where other gateways reach it over mutual TLS (`exchange.gateway_listen`).
    pub listen: SocketAddr,
    /// Seconds between polls of the configuration (`exchange.poll_secs`).
    pub poll_secs: u64,
    /// Seconds an expired configuration keeps serving (`exchange.stale_grace_secs`).
    pub stale_grace_secs: u64,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// A key in a configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "environment variable {v}"),
            Source::Flag(v) => write!(f, "flag {v}"),
        }
    }
}

/// A configuration problem, stated in one sentence that names its source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A key Civitas does not know.
    #[error("unknown configuration key `{key}` in {origin}; known keys: {known}")]
    UnknownKey {
        /// The key as written.
        key: String,
        /// Where it was found.
        origin: Source,
        /// The keys Civitas knows.
        known: String,
    },
    /// A value of the wrong shape.
    #[error("configuration key `{key}` from {origin} is invalid: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Where the value came from.
        origin: Source,
        /// What is wrong, in plain words.
        reason: String,
    },
    /// The file is not valid TOML.
    #[error("configuration file {path} is not valid TOML: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Str,
    Int,
    Bool,
}

/// Known keys, their type, default and whether the value is secret. Nested keys use dots
/// in files (`[demo] seed = 1`) and a double underscore in variables (`CIVITAS_DEMO__SEED`).
const KEYS: &[(&str, Kind, &str)] = &[
    ("data_dir", Kind::Str, "civitas-data"),
    ("database", Kind::Str, ""),
    ("listen", Kind::Str, "127.0.0.1:8080"),
    ("public_url", Kind::Str, ""),
    ("log_format", Kind::Str, "text"),
    ("log_level", Kind::Str, "info"),
    ("auto_migrate", Kind::Bool, "true"),
    ("max_connections", Kind::Int, "8"),
    ("shutdown_grace_secs", Kind::Int, "20"),
    ("workers", Kind::Int, "0"),
    ("demo.seed", Kind::Int, "20261122"),
    ("demo.citizens", Kind::Int, "10000"),
    ("demo.as_of", Kind::Str, ""),
    ("ledger.origin", Kind::Str, ""),
    ("ledger.checkpoint_ms", Kind::Int, "250"),
    ("ledger.witnesses", Kind::Str, ""),
    ("ledger.witness_quorum", Kind::Int, "0"),
    ("witness.name", Kind::Str, ""),
    ("witness.logs", Kind::Str, ""),
    ("identity.session_idle_mins", Kind::Int, "30"),
    ("identity.session_max_hours", Kind::Int, "12"),
    ("identity.dev_mail_sink", Kind::Bool, "false"),
    ("exchange.instance", Kind::Str, "TW"),
    ("role", Kind::Str, "all"),
    ("exchange.configuration_validity_secs", Kind::Int, "600"),
    ("exchange.gateway_member", Kind::Str, ""),
    ("exchange.directory_url", Kind::Str, ""),
    ("exchange.anchor_key", Kind::Str, ""),
    ("exchange.gateway_listen", Kind::Str, "127.0.0.1:5500"),
    ("exchange.poll_secs", Kind::Int, "30"),
    ("exchange.stale_grace_secs", Kind::Int, "86400"),
    ("exchange.archive_days", Kind::Int, "0"),
    ("notify.smtp_url", Kind::Str, ""),
    ("notify.from", Kind::Str, "notify@civitas.localhost"),
    ("notify.rate_limit_per_minute", Kind::Int, "3000"),
    ("notify.sms_url", Kind::Str, ""),
    ("notify.letter_url", Kind::Str, ""),
    ("notify.provider_secret", Kind::Str, ""),
    ("uploads.s3_bucket", Kind::Str, ""),
    ("uploads.s3_endpoint", Kind::Str, ""),
    ("uploads.s3_region", Kind::Str, "us-east-1"),
    ("uploads.s3_access_key_id", Kind::Str, ""),
    ("uploads.s3_secret_access_key", Kind::Str, ""),
];

/// Environment variables with this prefix are configuration, except these names.
const ENV_PREFIX: &str = "CIVITAS_";
const ENV_NOT_KEYS: &[&str] = &["CIVITAS_CONFIG"];
const ENV_IGNORED_PREFIXES: &[&str] = &["CIVITAS_TEST_"];

fn kind_of(key: &str) -> Option<(&'static str, Kind)> {
    KEYS.iter()
        .find(|(k, _, _)| *k == key)
        .map(|(k, t, _)| (*k, *t))
}

fn known_keys() -> String {
    KEYS.iter()
        .map(|(k, _, _)| *k)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The raw layers, gathered by the caller.
#[derive(Debug, Default, Clone)]
pub struct Layers {
    /// A configuration file's path and text.
    pub file: Option<(PathBuf, String)>,
    /// Environment variables (all of them; only `CIVITAS_*` are read).
    pub env: Vec<(String, String)>,
    /// Flags given on the command line: key, value, and the flag as typed (for messages).
    pub flags: Vec<(&'static str, String, &'static str)>,
}

/// A configuration with the source of each value.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The effective configuration.
    pub config: Config,
    /// Every key with its value as text (secrets masked) and its source.
    pub entries: Vec<(&'static str, String, Source)>,
}

type Raw = BTreeMap<&'static str, (String, Source)>;

fn put(raw: &mut Raw, key: &str, value: String, source: Source) -> Result<(), ConfigError> {
    match kind_of(key) {
        Some((k, _)) => {
            raw.insert(k, (value, source));
            Ok(())
        }
        None => Err(ConfigError::UnknownKey {
            key: key.to_string(),
            origin: source,
            known: known_keys(),
        }),
    }
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            other => out.push((key, other.clone())),
        }
    }
}

impl Layers {
    /// Resolves the layers into a checked configuration.
    pub fn resolve(&self) -> Result<Resolved, ConfigError> {
        let mut raw: Raw = BTreeMap::new();
        for (k, _, default) in KEYS {
            raw.insert(k, (default.to_string(), Source::Default));
        }
        if let Some((path, text)) = &self.file {
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Syntax {
                        path: path.clone(),
                        reason: e.message().to_string(),
                    })?;
            let mut flat = Vec::new();
            flatten("", &table, &mut flat);
            for (key, value) in flat {
                let text = match value {
                    toml::Value::String(s) => s,
                    other => other.to_string(),
                };
                put(&mut raw, &key, text, Source::File(path.clone()))?;
            }
        }
        let mut env: Vec<_> = self
            .env
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        env.sort();
        for (name, value) in env {
            if ENV_NOT_KEYS.contains(&name.as_str())
                || ENV_IGNORED_PREFIXES.iter().any(|p| name.starts_with(p))
            {
                continue;
            }
            let key = name[ENV_PREFIX.len()..]
                .to_ascii_lowercase()
                .replace("__", ".");
            put(&mut raw, &key, value.clone(), Source::Env(name.clone()))?;
        }
        for (key, value, flag) in &self.flags {
            put(
                &mut raw,
                key,
                value.clone(),
                Source::Flag((*flag).to_string()),
            )?;
        }
        build(&raw)
    }
}

fn invalid(key: &'static str, source: &Source, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        origin: source.clone(),
        reason: reason.into(),
    }
}

fn build(raw: &Raw) -> Result<Resolved, ConfigError> {
    let get = |key: &'static str| -> &(String, Source) { &raw[key] };
    let int = |key: &'static str, min: u64, max: u64| -> Result<u64, ConfigError> {
        let (v, src) = get(key);
        let n: u64 = v
            .trim()
            .parse()
            .map_err(|_| invalid(key, src, format!("`{v}` is not a whole number")))?;
        if n < min || n > max {
            return Err(invalid(
                key,
                src,
                format!("{n} is outside the allowed range {min} to {max}"),
            ));
        }
        Ok(n)
    };
    let boolean = |key: &'static str| -> Result<bool, ConfigError> {
        let (v, src) = get(key);
        match v.trim() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(invalid(key, src, format!("`{v}` is not true or false"))),
        }
    };
    let text = |key: &'static str| -> Option<&str> {
        let v = get(key).0.trim();
        (!v.is_empty()).then_some(v)
    };
    let provider_endpoint = |key: &'static str| -> Result<Option<ProviderEndpoint>, ConfigError> {
        match text(key) {
            None => Ok(None),
            Some("sandbox") => Ok(Some(ProviderEndpoint::Sandbox)),
            Some(u) => match url::Url::parse(u) {
                // Numbers, texts and letters cross the network: in clear only on this machine.
                Ok(p)
                    if (p.scheme() == "https" && p.host_str().is_some())
                        || (p.scheme() == "http"
                            && matches!(
                                p.host_str(),
                                Some("localhost" | "127.0.0.1" | "[::1]")
                            )) =>
                {
                    Ok(Some(ProviderEndpoint::Url(u.to_string())))
                }
                _ => Err(invalid(
                    key,
                    &get(key).1,
                    format!(
                        "`{u}` is neither `sandbox` nor an https:// URL (http:// only on this machine)"
                    ),
                )),
            },
        }
    };

    let (data_dir, _) = get("data_dir");
    if data_dir.trim().is_empty() {
        return Err(invalid(
            "data_dir",
            &get("data_dir").1,
            "it must name a folder",
        ));
    }
    let database = text("database").map(str::to_string);
    if let Some(url) = &database {
        check_database_url(url).map_err(|r| invalid("database", &get("database").1, r))?;
    }
    let (listen_text, listen_src) = get("listen");
    let listen: SocketAddr = listen_text.trim().parse().map_err(|_| {
        invalid(
            "listen",
            listen_src,
            format!("`{listen_text}` is not an address like 127.0.0.1:8080"),
        )
    })?;
    let public_url = text("public_url").map(str::to_string);
    if let Some(u) = &public_url {
        match url::Url::parse(u) {
            Ok(p) if p.scheme() == "http" || p.scheme() == "https" => {}
            _ => {
                return Err(invalid(
                    "public_url",
                    &get("public_url").1,
                    format!("`{u}` is not an http(s) URL"),
                ));
            }
        }
    }
    let (fmt_text, fmt_src) = get("log_format");
    let log_format = match fmt_text.trim() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(invalid(
                "log_format",
                fmt_src,
                format!("`{other}` is not `text` or `json`"),
            ));
        }
    };
    let demo_as_of = text("demo.as_of").map(str::to_string);
    if let Some(d) = demo_as_of.as_ref().filter(|d| !is_iso_date(d)) {
        return Err(invalid(
            "demo.as_of",
            &get("demo.as_of").1,
            format!("`{d}` is not a date like 2026-11-22"),
        ));
    }
    let exchange_instance = text("exchange.instance").unwrap_or("TW").to_string();
    crate::xroad::check_part("exchange instance", &exchange_instance).map_err(|e| {
        invalid(
            "exchange.instance",
            &get("exchange.instance").1,
            e.to_string(),
        )
    })?;
    let role = match get("role").0.trim() {
        "all" => Role::All,
        "gateway" => Role::Gateway,
        other => {
            return Err(invalid(
                "role",
                &get("role").1,
                format!("`{other}` is not `all` or `gateway`"),
            ));
        }
    };
    let exchange_gateway = if role == Role::Gateway {
        let required = |key: &'static str, what: &str| {
            text(key)
                .map(str::to_string)
                .ok_or_else(|| invalid(key, &get(key).1, format!("a gateway needs {what}")))
        };
        let member = required(
            "exchange.gateway_member",
            "the member it serves, such as TW/GOV/HRO",
        )?;
        crate::xroad::MemberId::parse(&member).map_err(|e| {
            invalid(
                "exchange.gateway_member",
                &get("exchange.gateway_member").1,
                e.to_string(),
            )
        })?;
        let directory_url = required("exchange.directory_url", "the directory's URL")?;
        // Reports to the directory name people, and the poll's claim must not be overheard:
        // plain http only on this machine.
        let loopback = |u: &url::Url| match u.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if !url::Url::parse(&directory_url)
            .is_ok_and(|u| u.scheme() == "https" || (u.scheme() == "http" && loopback(&u)))
        {
            return Err(invalid(
                "exchange.directory_url",
                &get("exchange.directory_url").1,
                format!("`{directory_url}` is not an https URL (plain http only on this machine)"),
            ));
        }
        let anchor_key = required(
            "exchange.anchor_key",
            "the directory's key (`civitas exchange anchor` on the directory prints it)",
        )?;
        let (listen_text, listen_src) = get("exchange.gateway_listen");
        let listen = listen_text.trim().parse().map_err(|_| {
            invalid(
                "exchange.gateway_listen",
                listen_src,
                format!("`{listen_text}` is not an address like 127.0.0.1:5500"),
            )
        })?;
        Some(GatewaySettings {
            member,
            directory_url: directory_url.trim_end_matches('/').to_string(),
            anchor_key,
            listen,
            poll_secs: int("exchange.poll_secs", 1, 86_400)?,
            stale_grace_secs: int("exchange.stale_grace_secs", 0, 30 * 86_400)?,
        })
    } else {
        None
    };
    let ledger_origin = text("ledger.origin").map(str::to_string);
    if let Some(o) = ledger_origin
        .as_ref()
        .filter(|o| o.contains('+') || o.chars().any(char::is_whitespace))
    {
        return Err(invalid(
            "ledger.origin",
            &get("ledger.origin").1,
            format!("`{o}` may not contain `+` or spaces"),
        ));
    }
    let ledger_witnesses = list(text("ledger.witnesses"))
        .into_iter()
        .map(|item| match item.split_once(' ') {
            Some((url, key)) if url.starts_with("http") && crate::is_verifier_key(key) => {
                Ok((url.to_string(), key.trim().to_string()))
            }
            _ => Err(invalid(
                "ledger.witnesses",
                &get("ledger.witnesses").1,
                format!("`{item}` is not `URL VERIFIER-KEY`; separate witnesses with commas"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ledger_witness_quorum = int("ledger.witness_quorum", 0, 100)?;
    if ledger_witness_quorum as usize > ledger_witnesses.len() {
        return Err(invalid(
            "ledger.witness_quorum",
            &get("ledger.witness_quorum").1,
            format!(
                "{ledger_witness_quorum} cosignatures cannot come from {} configured witnesses",
                ledger_witnesses.len()
            ),
        ));
    }
    let witness_logs = list(text("witness.logs"));
    if let Some(bad) = witness_logs.iter().find(|k| !crate::is_verifier_key(k)) {
        return Err(invalid(
            "witness.logs",
            &get("witness.logs").1,
            format!("`{bad}` is not a verifier key (name+id+key)"),
        ));
    }
    let config = Config {
        data_dir: PathBuf::from(data_dir.trim()),
        database,
        listen,
        public_url,
        log_format,
        log_level: text("log_level").unwrap_or("info").to_string(),
        auto_migrate: boolean("auto_migrate")?,
        max_connections: int("max_connections", 1, 1000)? as u32,
        shutdown_grace_secs: int("shutdown_grace_secs", 0, 3600)?,
        workers: int("workers", 0, 256)? as usize,
        demo_seed: int("demo.seed", 0, u64::MAX)?,
        demo_citizens: int("demo.citizens", 100, 10_000_000)?,
        demo_as_of,
        ledger_origin,
        ledger_checkpoint_ms: int("ledger.checkpoint_ms", 10, 60_000)?,
        ledger_witnesses,
        ledger_witness_quorum,
        witness_name: text("witness.name").map(str::to_string),
        witness_logs,
        session_idle_mins: int("identity.session_idle_mins", 1, 24 * 60)?,
        session_max_hours: int("identity.session_max_hours", 1, 24 * 30)?,
        dev_mail_sink: boolean("identity.dev_mail_sink")?,
        exchange_instance,
        role,
        exchange_configuration_validity_secs: int(
            "exchange.configuration_validity_secs",
            1,
            30 * 86_400,
        )?,
        exchange_gateway,
        exchange_archive_days: int("exchange.archive_days", 0, 3650)?,
        notify_smtp_url: match text("notify.smtp_url") {
            None => None,
            Some(u) => {
                check_smtp_url(u)
                    .map_err(|m| invalid("notify.smtp_url", &get("notify.smtp_url").1, m))?;
                Some(u.to_string())
            }
        },
        notify_from: {
            let from = text("notify.from").unwrap_or("notify@civitas.localhost");
            if !from.contains('@') || from.chars().any(char::is_whitespace) {
                return Err(invalid(
                    "notify.from",
                    &get("notify.from").1,
                    format!("`{from}` is not an e-mail address, like notify@agency.gov.example"),
                ));
            }
            from.to_string()
        },
        notify_rate_limit_per_minute: int("notify.rate_limit_per_minute", 1, 1_000_000)? as u32,
        notify_sms: provider_endpoint("notify.sms_url")?,
        notify_letters: provider_endpoint("notify.letter_url")?,
        notify_provider_secret: match text("notify.provider_secret") {
            Some(s) if s.len() < 16 => {
                return Err(invalid(
                    "notify.provider_secret",
                    &get("notify.provider_secret").1,
                    "at least 16 characters",
                ));
            }
            s => s.map(str::to_string),
        },
        uploads_s3: s3_bucket(&text, &get)?,
    };
    let to_provider = [&config.notify_sms, &config.notify_letters]
        .into_iter()
        .any(|e| matches!(e, Some(ProviderEndpoint::Url(_))));
    if to_provider && config.notify_provider_secret.is_none() {
        return Err(invalid(
            "notify.provider_secret",
            &get("notify.provider_secret").1,
            "a provider at a URL needs the secret shared with it (at least 16 characters)",
        ));
    }
    let entries = KEYS
        .iter()
        .map(|(k, _, _)| {
            let (v, s) = &raw[k];
            let shown = if matches!(
                *k,
                "notify.provider_secret" | "uploads.s3_secret_access_key"
            ) && !v.is_empty()
            {
                "****".to_string()
            } else if *k == "database" || *k == "notify.smtp_url" {
                mask_password(v)
            } else {
                v.clone()
            };
            (*k, shown, s.clone())
        })
        .collect();
    Ok(Resolved { config, entries })
}

/// The uploads bucket, when `uploads.s3_bucket` names one. People's documents cross the
/// network to it: over https, or plain http only to this machine.
fn s3_bucket<'a>(
    text: &impl Fn(&'static str) -> Option<&'a str>,
    get: &impl Fn(&'static str) -> &'a (String, Source),
) -> Result<Option<S3Bucket>, ConfigError> {
    let Some(bucket) = text("uploads.s3_bucket") else {
        for key in [
            "uploads.s3_endpoint",
            "uploads.s3_access_key_id",
            "uploads.s3_secret_access_key",
        ] {
            if text(key).is_some() {
                return Err(invalid(
                    key,
                    &get(key).1,
                    "it is used only with uploads.s3_bucket, which is not set",
                ));
            }
        }
        return Ok(None);
    };
    // S3's rules for bucket names: 3 to 63 lower-case letters, digits, dots and hyphens.
    if !(3..=63).contains(&bucket.len())
        || !bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err(invalid(
            "uploads.s3_bucket",
            &get("uploads.s3_bucket").1,
            format!(
                "`{bucket}` is not a bucket name (3 to 63 lower-case letters, digits, dots and hyphens)"
            ),
        ));
    }
    let endpoint = match text("uploads.s3_endpoint") {
        None => None,
        Some(u) => match url::Url::parse(u) {
            Ok(p)
                if (p.scheme() == "https" && p.host_str().is_some())
                    || (p.scheme() == "http"
                        && matches!(p.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))) =>
            {
                Some(u.trim_end_matches('/').to_string())
            }
            _ => {
                return Err(invalid(
                    "uploads.s3_endpoint",
                    &get("uploads.s3_endpoint").1,
                    format!("`{u}` is not an https:// URL (http:// only on this machine)"),
                ));
            }
        },
    };
    let access_key_id = text("uploads.s3_access_key_id").map(str::to_string);
    let secret_access_key = text("uploads.s3_secret_access_key").map(str::to_string);
    if access_key_id.is_some() != secret_access_key.is_some() {
        let missing = if access_key_id.is_some() {
            "uploads.s3_secret_access_key"
        } else {
            "uploads.s3_access_key_id"
        };
        return Err(invalid(
            missing,
            &get(missing).1,
            "an access key and its secret go together: set both or neither",
        ));
    }
    Ok(Some(S3Bucket {
        bucket: bucket.to_string(),
        endpoint,
        region: text("uploads.s3_region").unwrap_or("us-east-1").to_string(),
        access_key_id,
        secret_access_key,
    }))
}

/// Splits a comma-separated list, dropping empty items.
fn list(text: Option<&str>) -> Vec<String> {
    text.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Checks that a database URL names SQLite or PostgreSQL and is well formed.
pub fn check_database_url(url: &str) -> Result<(), String> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        if rest.trim_start_matches('/').is_empty() {
            return Err(
                "a sqlite: URL must name a file, like sqlite:///var/lib/civitas/civitas.db".into(),
            );
        }
        return Ok(());
    }
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "postgres" || u.scheme() == "postgresql" => {
            if u.host_str().is_none_or(str::is_empty) {
                return Err(format!("`{}` has no host", mask_password(url)));
            }
            Ok(())
        }
        Ok(u) => Err(format!(
            "scheme `{}` is not supported; use postgres:// or sqlite:",
            u.scheme()
        )),
        Err(e) => Err(format!("`{}` is not a URL ({e})", mask_password(url))),
    }
}

/// Checks an SMTP server's URL (`smtp://` or `smtps://`, with a host).
pub fn check_smtp_url(url: &str) -> Result<(), String> {
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "smtp" || u.scheme() == "smtps" => {
            if u.host_str().is_none_or(str::is_empty) {
                return Err("an SMTP URL needs a host".into());
            }
            match u.query_pairs().find(|(k, _)| k == "tls") {
                Some((_, v)) if v != "required" && v != "opportunistic" => Err(format!(
                    "tls={v} is not one of required (STARTTLS) or opportunistic"
                )),
                _ => Ok(()),
            }
        }
        Ok(u) => Err(format!(
            "scheme `{}` is not supported; use smtp:// or smtps://",
            u.scheme()
        )),
        Err(e) => Err(format!("not a URL ({e})")),
    }
}

/// Replaces the password of a URL (`scheme://user:password@host`) with `****`, working on
/// the text itself so that even a malformed URL never shows its password.
pub fn mask_password(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let Some(at) = url[start..authority_end].rfind('@').map(|i| start + i) else {
        return url.to_string();
    };
    match url[start..at].find(':').map(|i| start + i) {
        Some(colon) => format!("{}****{}", &url[..=colon], &url[at..]),
        None => url.to_string(),
    }
}

fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
    matches!((num(0..4), num(5..7), num(8..10)), (Some(_), Some(m), Some(d)) if (1..=12).contains(&m) && (1..=31).contains(&d))
}

impl Config {
    /// The database URL to connect to: the configured one, or SQLite in the data folder.
    pub fn database_url(&self) -> String {
        match &self.database {
            Some(u) => u.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("civitas.db").display()
            ),
        }
    }

    /// The ledger's origin: configured, or the public host followed by `/ledger`.
    pub fn ledger_origin(&self) -> String {
        if let Some(o) = &self.ledger_origin {
            return o.clone();
        }
        let base = self.base_url();
        let host = base.split("://").nth(1).unwrap_or(&base);
        format!("{host}/ledger")
    }

    /// The base URL people open, without a trailing slash.
    pub fn base_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None if self.listen.ip().is_unspecified() => {
                format!("http://localhost:{}", self.listen.port())
            }
            None => format!("http://{}", self.listen),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn flags_win_over_environment_which_wins_over_the_file() {
        let layers = Layers {
            file: Some((
                "c.toml".into(),
                "listen = \"127.0.0.1:1000\"\n[demo]\ncitizens = 500\nseed = 7\n".into(),
            )),
            env: env(&[
                ("CIVITAS_LISTEN", "127.0.0.1:2000"),
                ("CIVITAS_DEMO__CITIZENS", "600"),
                ("HOME", "/x"),
            ]),
            flags: vec![("listen", "127.0.0.1:3000".into(), "--listen")],
        };
        let r = layers.resolve().unwrap();
        assert_eq!(r.config.listen.port(), 3000);
        assert_eq!(r.config.demo_citizens, 600);
        assert_eq!(r.config.demo_seed, 7);
        let src = |k| r.entries.iter().find(|e| e.0 == k).unwrap().2.clone();
        assert_eq!(src("listen"), Source::Flag("--listen".into()));
        assert_eq!(
            src("demo.citizens"),
            Source::Env("CIVITAS_DEMO__CITIZENS".into())
        );
        assert_eq!(src("demo.seed"), Source::File("c.toml".into()));
        assert_eq!(src("log_format"), Source::Default);
    }

    #[test]
    fn workers_are_one_per_core_unless_set_within_bounds() {
        let with = |v: &str| {
            Layers {
                env: env(&[("CIVITAS_WORKERS", v)]),
                ..Default::default()
            }
            .resolve()
        };
        assert_eq!(Layers::default().resolve().unwrap().config.workers, 0);
        assert_eq!(with("1").unwrap().config.workers, 1);
        let e = with("1000").unwrap_err();
        assert!(e.to_string().contains("workers"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_source() {
        let e = Layers {
            file: Some(("c.toml".into(), "lisen = 1".into())),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("unknown configuration key `lisen` in file c.toml"),
            "{e}"
        );
        let e = Layers {
            env: env(&[("CIVITAS_PORT", "1")]),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("`port` in environment variable CIVITAS_PORT"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_reason() {
        let bad = |k: &'static str, v: &str| {
            Layers {
                flags: vec![(k, v.into(), "--x")],
                ..Default::default()
            }
            .resolve()
            .unwrap_err()
            .to_string()
        };
        assert!(bad("database", "mysql://x/y").contains("scheme `mysql` is not supported"));
        assert!(bad("database", "postgres://u:pw@:5432/db").contains("not a URL"));
        assert!(
            !bad("database", "postgres://u:pw@:5432/db").contains("pw"),
            "password leaked"
        );
        assert!(bad("listen", "localhost").contains("is not an address"));
        assert!(bad("log_format", "xml").contains("not `text` or `json`"));
        assert!(bad("demo.citizens", "ten").contains("not a whole number"));
        assert!(bad("demo.as_of", "22/11/2026").contains("not a date"));
        assert!(bad("exchange.instance", "T W").contains("exchange.instance"));
        // A gateway reaches its directory over https, or plain http on this machine.
        let gateway = |url: &str| {
            let layers = Layers {
                file: None,
                env: vec![
                    ("CIVITAS_ROLE".into(), "gateway".into()),
                    (
                        "CIVITAS_EXCHANGE__GATEWAY_MEMBER".into(),
                        "TW/GOV/HRO".into(),
                    ),
                    ("CIVITAS_EXCHANGE__DIRECTORY_URL".into(), url.into()),
                    ("CIVITAS_EXCHANGE__ANCHOR_KEY".into(), "key".into()),
                ],
                flags: Vec::new(),
            };
            layers.resolve().map(|_| ()).map_err(|e| e.to_string())
        };
        assert!(gateway("https://directory.example").is_ok());
        assert!(gateway("http://127.0.0.1:8080").is_ok());
        assert!(
            gateway("http://directory.example")
                .unwrap_err()
                .contains("https")
        );
        assert!(bad("exchange.instance", "TW/EE").contains("'/'"));
    }

    #[test]
    fn secrets_are_masked_in_entries() {
        let r = Layers {
            flags: vec![(
                "database",
                "postgres://app:hunter2@db/civitas".into(),
                "--database",
            )],
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let shown = &r.entries.iter().find(|e| e.0 == "database").unwrap().1;
        assert_eq!(shown, "postgres://app:****@db/civitas");
        assert_eq!(
            mask_password("postgres://a:b@c@h/x?p=1"),
            "postgres://a:****@h/x?p=1"
        );
        assert_eq!(mask_password("postgres://app@h/x"), "postgres://app@h/x");
        assert_eq!(
            r.config.database.as_deref(),
            Some("postgres://app:hunter2@db/civitas")
        );
    }

    #[test]
    fn an_uploads_bucket_is_checked_and_its_secret_masked() {
        let env = |pairs: &[(&str, &str)]| Layers {
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let r = env(&[
            ("CIVITAS_UPLOADS__S3_BUCKET", "civitas-uploads"),
            ("CIVITAS_UPLOADS__S3_ENDPOINT", "https://s3.gov.example/"),
            ("CIVITAS_UPLOADS__S3_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("CIVITAS_UPLOADS__S3_SECRET_ACCESS_KEY", "hunter2hunter2"),
        ])
        .resolve()
        .unwrap();
        let b = r.config.uploads_s3.as_ref().unwrap();
        assert_eq!(b.endpoint.as_deref(), Some("https://s3.gov.example"));
        assert_eq!(b.region, "us-east-1");
        assert_eq!(b.secret_access_key.as_deref(), Some("hunter2hunter2"));
        let shown = |k: &str| r.entries.iter().find(|e| e.0 == k).unwrap().1.clone();
        assert_eq!(shown("uploads.s3_secret_access_key"), "****");
        assert!(!format!("{b:?}").contains("hunter2"));
        assert!(
            Layers::default()
                .resolve()
                .unwrap()
                .config
                .uploads_s3
                .is_none()
        );
        let refused = |pairs: &[(&str, &str)], key: &str| {
            let e = env(pairs).resolve().unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        };
        refused(
            &[("CIVITAS_UPLOADS__S3_BUCKET", "Bad_Bucket")],
            "uploads.s3_bucket",
        );
        refused(
            &[
                ("CIVITAS_UPLOADS__S3_BUCKET", "b-1"),
                ("CIVITAS_UPLOADS__S3_ENDPOINT", "http://s3.gov.example"),
            ],
            "uploads.s3_endpoint",
        );
        refused(
            &[
                ("CIVITAS_UPLOADS__S3_BUCKET", "b-1"),
                ("CIVITAS_UPLOADS__S3_ACCESS_KEY_ID", "AKIA"),
            ],
            "uploads.s3_secret_access_key",
        );
        refused(
            &[("CIVITAS_UPLOADS__S3_ENDPOINT", "https://s3.gov.example")],
            "uploads.s3_endpoint",
        );
        let local = env(&[
            ("CIVITAS_UPLOADS__S3_BUCKET", "b-1"),
            ("CIVITAS_UPLOADS__S3_ENDPOINT", "http://127.0.0.1:9000"),
        ])
        .resolve()
        .unwrap();
        assert!(local.config.uploads_s3.unwrap().access_key_id.is_none());
    }

    #[test]
    fn witnesses_are_url_and_key_pairs_and_the_quorum_must_be_reachable() {
        let flags = |w: &str, q: &str| {
            Layers {
                flags: vec![
                    ("ledger.witnesses", w.into(), "--w"),
                    ("ledger.witness_quorum", q.into(), "--q"),
                ],
                ..Default::default()
            }
            .resolve()
        };
        let ok = flags(
            "http://a/ledger/witness w1+0a0b0c0d+BAAA, http://b/ledger/witness w2+01020304+BAAB",
            "2",
        )
        .unwrap();
        assert_eq!(ok.config.ledger_witnesses.len(), 2);
        assert_eq!(ok.config.ledger_witnesses[1].0, "http://b/ledger/witness");
        assert!(
            flags("http://a/x w1+0a0b0c0d+BAAA", "2")
                .unwrap_err()
                .to_string()
                .contains("cannot come from 1")
        );
        assert!(
            flags("w1+0a0b0c0d+BAAA", "0")
                .unwrap_err()
                .to_string()
                .contains("is not `URL VERIFIER-KEY`")
        );
    }

    #[test]
    fn toml_syntax_errors_name_the_file() {
        let e = Layers {
            file: Some(("bad.toml".into(), "listen = ".into())),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("configuration file bad.toml is not valid TOML"),
            "{e}"
        );
    }
}
