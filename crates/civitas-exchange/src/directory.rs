//! The directory: members, their subsystems, the services those provide (each with its
//! endpoints, from its OpenAPI document when it has one) and access rights. Every change is
//! a ledger event. Identifiers are stored in their encoded X-Road form.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use civitas_core::xroad::{ClientId, MemberId, ServiceId};
use civitas_ledger::{Event, Ledger};
use civitas_store::sqlx::{self, Row};
use civitas_store::{Db, Script, Value};
use serde::{Deserialize, Serialize};

use crate::ExchangeError;
use crate::configuration::{Anchor, Configuration, Gateway, Signed};
use crate::network;
use ed25519_dalek::{SigningKey, VerifyingKey};

/// SHA-256 of bytes, hex.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    civitas_ledger::event::hex(&sha2::Sha256::digest(bytes))
}

/// The base URL prefix of a base registry this program serves itself, in process
/// (`civitas:registry/population`): no network hop, and reachable only through the gateway.
pub const BUILT_IN: &str = "civitas:registry/";

/// HTTP methods a right or an endpoint may name (`*` is any).
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
];

/// A member of the exchange (an agency, a company).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `INSTANCE/CLASS/CODE`.
    pub id: MemberId,
    /// Its name.
    pub name: String,
}

/// A subsystem: one information system of a member, which calls and provides services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subsystem {
    /// `INSTANCE/CLASS/MEMBER/SUBSYSTEM`.
    pub id: ClientId,
    /// Its name.
    pub name: String,
    /// The member's name.
    pub member_name: String,
    /// Address ranges its information system may call the gateway from.
    pub networks: String,
    /// Whether the law lets it defer when the person sees its calls (an investigation):
    /// see [`MAX_DEFERRAL_DAYS`].
    pub may_defer: bool,
}

/// The longest a call about a person may stay out of that person's sight.
pub const MAX_DEFERRAL_DAYS: i64 = 366;

/// One method and path of a service (`*` as a path segment matches any one segment).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    /// The HTTP method, or `*`.
    pub method: String,
    /// The path, from the service's root.
    pub path: String,
}

impl Endpoint {
    /// Reads `METHOD /path`, as operators write endpoints (checked when the service is added).
    pub fn parse(line: &str) -> Result<Endpoint, ExchangeError> {
        let (method, path) = line.trim().split_once(' ').ok_or_else(|| {
            ExchangeError::Invalid(format!(
                "endpoint {line:?}: give a method and a path, such as GET /persons"
            ))
        })?;
        Ok(Endpoint {
            method: method.into(),
            path: path.trim().into(),
        })
    }
}

/// A service a subsystem provides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// `INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE`.
    pub id: ServiceId,
    /// `OPENAPI` when described by an OpenAPI document, else `REST`.
    pub kind: String,
    /// Where the provider's information system serves it; the request's path follows.
    pub base_url: String,
    /// Whether calls are about a person and need a person, a purpose and a legal basis.
    pub personal: bool,
    /// Whether it is switched off.
    pub disabled: bool,
    /// Its endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// What a new service is.
#[derive(Debug, Clone)]
pub struct NewService {
    /// Its identifier.
    pub id: ServiceId,
    /// Where the provider serves it (`http` or `https`).
    pub base_url: String,
    /// Its OpenAPI document (JSON), which gives its endpoints.
    pub openapi: Option<String>,
    /// Its endpoints, for a service without an OpenAPI document.
    pub endpoints: Vec<Endpoint>,
    /// Whether calls are about a person.
    pub personal: bool,
}

/// A client subsystem's right to call a service's method under a path prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRight {
    /// The service.
    pub service: ServiceId,
    /// The client subsystem.
    pub client: ClientId,
    /// The method, or `*`.
    pub method: String,
    /// The path prefix (`/` for all).
    pub path: String,
}

/// Whether a right for `right_method` (or `*`) under `right_path` lets a call with `method`
/// reach `path`.
fn covers(right_method: &str, right_path: &str, method: &str, path: &str) -> bool {
    (right_method == "*" || right_method.eq_ignore_ascii_case(method))
        && path_under(path, right_path)
}

/// Whether `path` is `prefix` or below it, segment by segment (`/a` covers `/a/b`, not `/ab`).
pub fn path_under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The columns that name a right, in table order.
fn right_key(service: &ServiceId, client: &ClientId, method: &str, path: &str) -> Vec<Value> {
    vec![
        Value::Text(service.to_string()),
        Value::Text(client.to_string()),
        Value::Text(method.into()),
        Value::Text(path.into()),
    ]
}

/// The event of a right granted or revoked.
fn right_event(
    kind: &str,
    actor: &str,
    service: &ServiceId,
    client: &ClientId,
    method: &str,
    path: &str,
) -> Event {
    Event::new(kind, actor, &format!("exchange/service/{service}"))
        .with("client", client.to_string())
        .with("method", method)
        .with("path", path)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Checks a method: one of HTTP's, or `*`; returns it upper-cased.
fn method(m: &str) -> Result<String, ExchangeError> {
    let m = m.trim().to_ascii_uppercase();
    if m == "*" || METHODS.contains(&m.as_str()) {
        Ok(m)
    } else {
        Err(ExchangeError::Invalid(format!(
            "{m:?} is not an HTTP method (GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS, TRACE) or *"
        )))
    }
}

/// Checks a path or path prefix: it starts with `/` and holds no `..` segment.
fn path(p: &str) -> Result<String, ExchangeError> {
    let p = p.trim();
    if !p.starts_with('/') || p.split('/').any(|s| s == ".." || s == ".") || p.contains(['?', '#'])
    {
        return Err(ExchangeError::Invalid(format!(
            "{p:?} is not a path: it must start with / and have no . or .. segments, query or fragment"
        )));
    }
    Ok(p.to_string())
}

/// The endpoints an OpenAPI document declares: each path with each of its methods, path
/// parameters (`{id}`) as `*`.
pub fn openapi_endpoints(doc: &str) -> Result<Vec<Endpoint>, ExchangeError> {
    let v: serde_json::Value = serde_json::from_str(doc)
        .map_err(|e| ExchangeError::Invalid(format!("the OpenAPI document is not JSON: {e}")))?;
    if !v["openapi"].as_str().is_some_and(|s| s.starts_with('3')) {
        return Err(ExchangeError::Invalid(
            "the OpenAPI document must be OpenAPI 3 (its \"openapi\" field)".into(),
        ));
    }
    let paths = v["paths"]
        .as_object()
        .ok_or_else(|| ExchangeError::Invalid("the OpenAPI document has no paths".into()))?;
    let mut out = Vec::new();
    for (p, item) in paths {
        let generic: String = p
            .split('/')
            .map(|s| {
                if s.starts_with('{') && s.ends_with('}') {
                    "*"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let generic = path(&generic)?;
        for m in METHODS {
            if item.get(m.to_ascii_lowercase()).is_some() {
                out.push(Endpoint {
                    method: m.to_string(),
                    path: generic.clone(),
                });
            }
        }
    }
    out.sort();
    Ok(out)
}

/// How old a snapshot may be before changes made elsewhere are read.
pub const REFRESH: Duration = Duration::from_secs(1);

/// Changes this process has made to any directory (a snapshot older than the last is stale).
static LOCAL_CHANGES: AtomicU64 = AtomicU64::new(0);

/// The directory at one moment, for checks that must not wait on the database: read from
/// the database on the all-in-one node, or from the last signed configuration on a gateway.
#[derive(Debug)]
pub struct Snapshot {
    loaded: Instant,
    local: u64,
    configuration: Configuration,
    /// Whether it came signed from the directory (a gateway's), and so can go stale.
    signed: bool,
    subsystems: HashMap<ClientId, Subsystem>,
    /// Each subsystem's address ranges, parsed once per snapshot.
    networks: HashMap<ClientId, Vec<network::Network>>,
    services: HashMap<ServiceId, Arc<Service>>,
    /// service → client → (method, path prefix) rights.
    rights: HashMap<ServiceId, HashMap<ClientId, Vec<(String, String)>>>,
    /// The gateways in force with their keys decoded once, by member.
    gateways: HashMap<MemberId, Arc<GatewayEntry>>,
}

/// A gateway in force, its keys decoded.
#[derive(Debug)]
pub struct GatewayEntry {
    /// The gateway as the configuration gives it.
    pub gateway: Gateway,
    /// Its message-signing key.
    pub key: VerifyingKey,
    /// Its TLS certificate (DER).
    pub certificate: Vec<u8>,
}

impl Snapshot {
    fn new(configuration: Configuration, local: u64, signed: bool) -> Snapshot {
        let mut rights: HashMap<ServiceId, HashMap<ClientId, Vec<(String, String)>>> =
            HashMap::new();
        for r in &configuration.rights {
            rights
                .entry(r.service.clone())
                .or_default()
                .entry(r.client.clone())
                .or_default()
                .push((r.method.clone(), r.path.clone()));
        }
        let subsystems: HashMap<ClientId, Subsystem> = configuration
            .subsystems
            .iter()
            .map(|s| (s.id.clone(), s.clone()))
            .collect();
        // Ranges are checked when stored; one that does not parse lets nobody call.
        let networks = subsystems
            .iter()
            .map(|(id, s)| {
                let list = network::parse_list(&s.networks).unwrap_or_else(|e| {
                    tracing::warn!(subsystem = %id, error = %e, "unreadable address ranges");
                    Vec::new()
                });
                (id.clone(), list)
            })
            .collect();
        let services = configuration
            .services
            .iter()
            .map(|s| (s.id.clone(), Arc::new(s.clone())))
            .collect();
        // A gateway whose keys do not decode is trusted by nobody.
        let gateways = configuration
            .gateways
            .iter()
            .filter_map(|g| {
                let entry = GatewayEntry {
                    key: g.verifying_key().ok()?,
                    certificate: g.certificate_der().ok()?,
                    gateway: g.clone(),
                };
                Some((g.member.clone(), Arc::new(entry)))
            })
            .collect();
        Snapshot {
            gateways,
            loaded: Instant::now(),
            local,
            signed,
            subsystems,
            networks,
            services,
            rights,
            configuration,
        }
    }

    /// The configuration it was made from.
    pub fn configuration(&self) -> &Configuration {
        &self.configuration
    }

    /// Whether it came signed from the directory.
    pub fn is_signed(&self) -> bool {
        self.signed
    }

    /// Every member.
    pub fn members(&self) -> &[Member] {
        &self.configuration.members
    }

    /// Every subsystem, by identifier.
    pub fn subsystems(&self) -> &[Subsystem] {
        &self.configuration.subsystems
    }

    /// A subsystem.
    pub fn subsystem(&self, id: &ClientId) -> Option<&Subsystem> {
        self.subsystems.get(id)
    }

    /// Whether a subsystem's information system may call from `ip`.
    pub fn calls_from(&self, id: &ClientId, ip: std::net::IpAddr) -> bool {
        self.networks
            .get(id)
            .is_some_and(|list| list.iter().any(|n| n.contains(ip)))
    }

    /// A service.
    pub fn service(&self, id: &ServiceId) -> Option<&Arc<Service>> {
        self.services.get(id)
    }

    /// The services a subsystem provides, by identifier.
    pub fn services_of(&self, provider: &ClientId) -> Vec<&Service> {
        self.configuration
            .services
            .iter()
            .filter(|s| s.id.provider == *provider)
            .collect()
    }

    /// A service's OpenAPI document, when it has one.
    pub fn openapi(&self, id: &ServiceId) -> Option<&str> {
        self.configuration
            .openapi
            .get(&id.to_string())
            .map(String::as_str)
    }

    /// The rights a client holds on a provider subsystem's services.
    pub fn rights_of(&self, client: &ClientId, provider: &ClientId) -> Vec<AccessRight> {
        self.configuration
            .rights
            .iter()
            .filter(|r| r.client == *client && r.service.provider == *provider)
            .cloned()
            .collect()
    }

    /// Whether `client` may call `method` on `path` of `service`.
    pub fn may_call(
        &self,
        client: &ClientId,
        service: &ServiceId,
        method: &str,
        path: &str,
    ) -> bool {
        self.rights
            .get(service)
            .and_then(|by_client| by_client.get(client))
            .is_some_and(|list| list.iter().any(|(m, p)| covers(m, p, method, path)))
    }

    /// The gateway in force for a member.
    pub fn gateway_of(&self, member: &MemberId) -> Option<&Arc<GatewayEntry>> {
        self.gateways.get(member)
    }

    /// The gateway in force whose TLS certificate this is; none when the certificate is not
    /// one gateway's alone.
    pub fn gateway_with_certificate(&self, der: &[u8]) -> Option<&Arc<GatewayEntry>> {
        let mut found = self.gateways.values().filter(|g| g.certificate == der);
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }
}

/// How fresh a gateway's configuration is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Freshness {
    /// No configuration has arrived yet.
    Missing,
    /// In force until it expires.
    Fresh,
    /// Expired, and served on within the grace period.
    Stale,
    /// Expired beyond the grace period: calls are refused.
    Expired,
}

/// A gateway's view of its configuration, for alarms.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigurationState {
    /// Fresh, stale, expired or missing.
    pub freshness: Freshness,
    /// The version held.
    pub version: Option<u64>,
    /// When the held configuration expires (ms since the epoch).
    pub expires_ms: Option<i64>,
    /// When the grace period after it ends (ms since the epoch).
    pub grace_ends_ms: Option<i64>,
    /// When a configuration was last fetched and accepted (ms since the epoch).
    pub fetched_ms: Option<i64>,
    /// Why the last fetch failed, when it did.
    pub last_error: Option<String>,
}

/// A gateway's source of the directory: the signed configuration it polls.
#[derive(Debug)]
struct Remote {
    anchor: Anchor,
    grace_ms: i64,
    current: RwLock<Option<Arc<Snapshot>>>,
    fetched_ms: AtomicI64,
    last_error: RwLock<Option<String>>,
}

/// The directory, over the database, logging changes to the ledger; or, on a gateway, the
/// signed configuration it receives from the directory.
#[derive(Clone)]
pub struct Directory {
    db: Db,
    ledger: Ledger,
    instance: String,
    cache: Arc<RwLock<Option<Arc<Snapshot>>>>,
    reload: Arc<tokio::sync::Mutex<()>>,
    remote: Option<Arc<Remote>>,
}

impl Directory {
    /// The directory of the X-Road instance `instance` (such as `TW`).
    pub fn new(db: Db, ledger: Ledger, instance: &str) -> Directory {
        Directory {
            db,
            ledger,
            instance: instance.to_string(),
            cache: Arc::default(),
            reload: Arc::default(),
            remote: None,
        }
    }

    /// A gateway's directory: what the configuration signed under `anchor` says, once one
    /// has been [installed](Directory::install). An expired configuration is served on for
    /// `grace` before calls are refused.
    pub fn remote(db: Db, ledger: Ledger, anchor: Anchor, grace: Duration) -> Directory {
        Directory {
            db,
            ledger,
            instance: anchor.instance.clone(),
            cache: Arc::default(),
            reload: Arc::default(),
            remote: Some(Arc::new(Remote {
                anchor,
                grace_ms: grace.as_millis() as i64,
                current: RwLock::new(None),
                fetched_ms: AtomicI64::new(0),
                last_error: RwLock::new(None),
            })),
        }
    }

    /// The instance this directory belongs to.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether this is a gateway's copy of a signed configuration.
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// The subjects of a person's deferred calls whose time has come (see
    /// [`crate::deferral_record`]).
    pub async fn deferrals_due(
        &self,
        person_subject: &str,
        now_ms: i64,
    ) -> Result<Vec<String>, ExchangeError> {
        Ok(sqlx::query_scalar(
            "SELECT deferral_subject FROM exchange_deferrals WHERE person_subject = $1 AND until_ms <= $2 ORDER BY until_ms",
        )
        .bind(person_subject)
        .bind(now_ms)
        .fetch_all(self.db.pool())
        .await?)
    }

    /// The database this directory works on.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Logs that someone read an archived call's bodies.
    pub async fn log_archive_read(
        &self,
        request_id: &str,
        actor: &str,
    ) -> Result<(), ExchangeError> {
        let event = Event::new("exchange.archive_read", actor, "exchange/archive").with(
            "request_id",
            request_id.chars().take(100).collect::<String>(),
        );
        self.ledger.append(&event).await?;
        Ok(())
    }

    fn own_instance(&self, instance: &str) -> Result<(), ExchangeError> {
        if instance == self.instance {
            Ok(())
        } else {
            Err(ExchangeError::Invalid(format!(
                "{instance} is not this exchange's instance ({})",
                self.instance
            )))
        }
    }

    /// Makes a change: its writes, the directory's version and its ledger event commit
    /// together (in the ledger's batch), so no change stands unlogged; then it is in force
    /// for this process's next snapshot. Each statement changes one row (the callers check
    /// first).
    async fn commit(&self, mut writes: Script, event: Event) -> Result<(), ExchangeError> {
        if self.remote.is_some() {
            return Err(ExchangeError::Invalid(
                "a gateway's directory comes from the signed configuration; change it on the directory node".into(),
            ));
        }
        writes.push(
            "UPDATE exchange_state SET version = version + 1 WHERE id = 1",
            Vec::new(),
        );
        self.ledger.append_with(&event, writes).await?;
        LOCAL_CHANGES.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// The whole directory in memory, for the gateway's checks. A change made in this process
    /// is in the very next snapshot; one made by another process or node (the CLI, another
    /// server on the same PostgreSQL) within [`REFRESH`]. On a gateway, the last configuration
    /// installed.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, ExchangeError> {
        if let Some(remote) = &self.remote {
            return remote
                .current
                .read()
                .ok()
                .and_then(|c| c.clone())
                .ok_or_else(|| {
                    ExchangeError::Unavailable(
                        "no configuration has arrived from the directory yet".into(),
                    )
                });
        }
        let fresh = || {
            let local = LOCAL_CHANGES.load(Ordering::SeqCst);
            self.cache
                .read()
                .ok()?
                .as_ref()
                .filter(|s| s.local == local && s.loaded.elapsed() < REFRESH)
                .cloned()
        };
        if let Some(s) = fresh() {
            return Ok(s);
        }
        // One reload at a time: the others wait for it rather than read the tables too.
        let _reloading = self.reload.lock().await;
        if let Some(s) = fresh() {
            return Ok(s);
        }
        let local = LOCAL_CHANGES.load(Ordering::SeqCst);
        let snapshot = Arc::new(Snapshot::new(self.configuration(0).await?, local, false));
        if let Ok(mut cached) = self.cache.write() {
            *cached = Some(snapshot.clone());
        }
        Ok(snapshot)
    }

    /// The whole directory as a configuration valid for `validity_ms` from now.
    pub async fn configuration(&self, validity_ms: i64) -> Result<Configuration, ExchangeError> {
        let version: i64 = sqlx::query_scalar("SELECT version FROM exchange_state WHERE id = 1")
            .fetch_optional(self.db.pool())
            .await?
            .unwrap_or(0);
        let mut rights = Vec::new();
        for r in sqlx::query(
            "SELECT service_id, client_id, method, path FROM exchange_access ORDER BY service_id, client_id, path, method",
        )
        .fetch_all(self.db.pool())
        .await?
        {
            let service: String = r.try_get("service_id")?;
            let client: String = r.try_get("client_id")?;
            rights.push(AccessRight {
                service: ServiceId::parse(&service)?,
                client: ClientId::parse(&client)?,
                method: r.try_get("method")?,
                path: r.try_get("path")?,
            });
        }
        let mut openapi = std::collections::BTreeMap::new();
        for r in sqlx::query("SELECT id, openapi FROM exchange_services WHERE openapi IS NOT NULL")
            .fetch_all(self.db.pool())
            .await?
        {
            openapi.insert(r.try_get("id")?, r.try_get("openapi")?);
        }
        let now = now_ms();
        Ok(Configuration {
            instance: self.instance.clone(),
            version: version as u64,
            issued_ms: now,
            expires_ms: now + validity_ms,
            members: self.members().await?,
            subsystems: self.subsystems().await?,
            services: self.services_where("", None).await?,
            openapi,
            rights,
            gateways: self.gateways().await?,
        })
    }

    /// The configuration, valid for `validity`, signed with the directory's key.
    pub async fn signed_configuration(&self, validity: Duration) -> Result<Signed, ExchangeError> {
        let configuration = self.configuration(validity.as_millis() as i64).await?;
        let key = self.configuration_key().await?;
        crate::configuration::sign(&configuration, &key)
    }

    /// The anchor gateways trust this directory by.
    pub async fn anchor(&self) -> Result<Anchor, ExchangeError> {
        Ok(Anchor {
            instance: self.instance.clone(),
            key: crate::configuration::key_text(&self.configuration_key().await?.verifying_key()),
        })
    }

    /// The key the configuration is signed with, made on first use and kept in the database,
    /// so that every node of a PostgreSQL deployment signs with the same one.
    async fn configuration_key(&self) -> Result<SigningKey, ExchangeError> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let fetch = || async {
            sqlx::query_scalar::<_, String>("SELECT secret FROM exchange_keys WHERE id = 1")
                .fetch_optional(self.db.pool())
                .await
        };
        let secret = match fetch().await? {
            Some(s) => s,
            None => {
                let key = SigningKey::generate(&mut rand_core::OsRng);
                sqlx::query("INSERT INTO exchange_keys (id, secret, created_ms) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING")
                    .bind(b64.encode(key.to_bytes()))
                    .bind(now_ms())
                    .execute(self.db.pool())
                    .await?;
                // Another node may have won the race: read back whichever key was stored.
                fetch().await?.ok_or_else(|| {
                    ExchangeError::Invalid("the configuration key vanished".into())
                })?
            }
        };
        let seed: [u8; 32] = b64
            .decode(secret)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| ExchangeError::Invalid("the configuration key is malformed".into()))?;
        Ok(SigningKey::from_bytes(&seed))
    }

    /// Takes a signed configuration from the directory: it must verify under the anchor and
    /// be no older than the one held. Returns its version.
    pub fn install(&self, text: &str) -> Result<u64, ExchangeError> {
        let Some(remote) = &self.remote else {
            return Err(ExchangeError::Invalid(
                "only a gateway installs configurations".into(),
            ));
        };
        let outcome = (|| {
            let configuration = crate::configuration::verify(text, &remote.anchor)?;
            let held = remote
                .current
                .read()
                .ok()
                .and_then(|c| c.as_ref().map(|s| s.configuration.clone()));
            if let Some(held) = held {
                if configuration.version < held.version {
                    return Err(ExchangeError::Invalid(format!(
                        "the configuration offered (version {}) is older than the one held ({})",
                        configuration.version, held.version
                    )));
                }
                if configuration.issued_ms < held.issued_ms {
                    return Err(ExchangeError::Invalid(
                        "the configuration offered was issued before the one held".into(),
                    ));
                }
            }
            let version = configuration.version;
            let snapshot = Arc::new(Snapshot::new(configuration, 0, true));
            if let Ok(mut c) = remote.current.write() {
                *c = Some(snapshot);
            }
            remote.fetched_ms.store(now_ms(), Ordering::SeqCst);
            Ok(version)
        })();
        if let Ok(mut e) = remote.last_error.write() {
            *e = outcome.as_ref().err().map(ToString::to_string);
        }
        outcome
    }

    /// A gateway's configuration as installed, without waiting (for the TLS handshake).
    pub fn installed(&self) -> Option<Arc<Snapshot>> {
        self.remote
            .as_ref()?
            .current
            .read()
            .ok()
            .and_then(|c| c.clone())
    }

    /// Notes that fetching the configuration failed (for the alarms).
    pub fn fetch_failed(&self, why: &str) {
        if let Some(remote) = &self.remote
            && let Ok(mut e) = remote.last_error.write()
        {
            *e = Some(why.to_string());
        }
    }

    /// How fresh a gateway's configuration is at `now_ms`; `None` on the directory itself,
    /// whose directory is always current.
    pub fn configuration_state(&self, now_ms: i64) -> Option<ConfigurationState> {
        let remote = self.remote.as_ref()?;
        let held = remote.current.read().ok().and_then(|c| c.clone());
        let fetched = remote.fetched_ms.load(Ordering::SeqCst);
        let last_error = remote.last_error.read().ok().and_then(|e| e.clone());
        let Some(held) = held else {
            return Some(ConfigurationState {
                freshness: Freshness::Missing,
                version: None,
                expires_ms: None,
                grace_ends_ms: None,
                fetched_ms: None,
                last_error,
            });
        };
        let expires = held.configuration.expires_ms;
        let grace_ends = expires.saturating_add(remote.grace_ms);
        let freshness = if now_ms <= expires {
            Freshness::Fresh
        } else if now_ms <= grace_ends {
            Freshness::Stale
        } else {
            Freshness::Expired
        };
        Some(ConfigurationState {
            freshness,
            version: Some(held.configuration.version),
            expires_ms: Some(expires),
            grace_ends_ms: Some(grace_ends),
            fetched_ms: (fetched > 0).then_some(fetched),
            last_error,
        })
    }

    /// Registers the gateway of a member (replacing none: revoke the old one first), with
    /// its address and its keys' public halves.
    pub async fn add_gateway(
        &self,
        member: &MemberId,
        address: &str,
        keys: &crate::keys::PublicKeys,
        actor: &str,
    ) -> Result<Gateway, ExchangeError> {
        self.own_instance(&member.instance)?;
        if !self.members().await?.iter().any(|m| m.id == *member) {
            return Err(ExchangeError::NotFound(format!("no member {member}")));
        }
        let url = url::Url::parse(address)
            .ok()
            .filter(|u| u.scheme() == "https" && u.host().is_some() && u.path() == "/")
            .ok_or_else(|| {
                ExchangeError::Invalid(format!(
                    "{address:?} is not a gateway address such as https://gateway.example:5500"
                ))
            })?;
        let gateway = Gateway {
            member: member.clone(),
            address: url.as_str().trim_end_matches('/').to_string(),
            tls_certificate: keys.tls_certificate.trim().to_string(),
            signing_key: keys.signing_key.trim().to_string(),
        };
        gateway.verifying_key()?;
        let der = gateway.certificate_der()?;
        if der.first() != Some(&0x30) {
            return Err(ExchangeError::Invalid(
                "the TLS certificate is not a DER certificate".into(),
            ));
        }
        let existing = self.gateways().await?;
        if existing.iter().any(|g| g.member == *member) {
            return Err(ExchangeError::Conflict(format!(
                "{member} has a gateway already; revoke it first"
            )));
        }
        // One gateway's keys are its own: calls are attributed by them.
        if let Some(other) = existing.iter().find(|g| {
            g.signing_key == gateway.signing_key || g.tls_certificate == gateway.tls_certificate
        }) {
            return Err(ExchangeError::Conflict(format!(
                "these keys are {}'s gateway's; each gateway has keys of its own",
                other.member
            )));
        }
        let mut w = Script::new();
        w.push(
            "INSERT INTO exchange_gateways (member_id, address, tls_certificate, signing_key, added_ms) VALUES (?, ?, ?, ?, ?)",
            vec![
                Value::Text(member.to_string()),
                Value::Text(gateway.address.clone()),
                Value::Text(gateway.tls_certificate.clone()),
                Value::Text(gateway.signing_key.clone()),
                Value::I64(now_ms()),
            ],
        );
        let event = Event::new(
            "exchange.gateway_added",
            actor,
            &format!("exchange/gateway/{member}"),
        )
        .with("address", gateway.address.clone())
        .with("signing_key", gateway.signing_key.clone())
        .with("tls_certificate_sha256", sha256_hex(&der));
        self.commit(w, event).await?;
        Ok(gateway)
    }

    /// Revokes a member's gateway: its keys are no longer trusted by anyone once gateways
    /// hold the next configuration.
    pub async fn revoke_gateway(
        &self,
        member: &MemberId,
        actor: &str,
    ) -> Result<(), ExchangeError> {
        let Some(old) = self
            .gateways()
            .await?
            .into_iter()
            .find(|g| g.member == *member)
        else {
            return Err(ExchangeError::NotFound(format!("{member} has no gateway")));
        };
        let mut w = Script::new();
        w.push(
            "DELETE FROM exchange_gateways WHERE member_id = ?",
            vec![Value::Text(member.to_string())],
        );
        let event = Event::new(
            "exchange.gateway_revoked",
            actor,
            &format!("exchange/gateway/{member}"),
        )
        .with("signing_key", old.signing_key.clone())
        .with(
            "tls_certificate_sha256",
            sha256_hex(&old.certificate_der()?),
        );
        self.commit(w, event).await
    }

    /// Every gateway in force.
    pub async fn gateways(&self) -> Result<Vec<Gateway>, ExchangeError> {
        let rows = sqlx::query(
            "SELECT member_id, address, tls_certificate, signing_key FROM exchange_gateways ORDER BY member_id",
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let member: String = r.try_get("member_id")?;
                Ok(Gateway {
                    member: MemberId::parse(&member)?,
                    address: r.try_get("address")?,
                    tls_certificate: r.try_get("tls_certificate")?,
                    signing_key: r.try_get("signing_key")?,
                })
            })
            .collect()
    }

    /// Registers a member.
    pub async fn add_member(
        &self,
        id: &MemberId,
        name: &str,
        actor: &str,
    ) -> Result<Member, ExchangeError> {
        self.own_instance(&id.instance)?;
        let name = name.trim();
        if name.is_empty() {
            return Err(ExchangeError::Invalid("a member needs a name".into()));
        }
        if self.members().await?.iter().any(|m| m.id == *id) {
            return Err(ExchangeError::Conflict(format!(
                "member {id} exists already"
            )));
        }
        let mut w = Script::new();
        w.push(
            "INSERT INTO exchange_members (id, instance, class, code, name, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
            vec![
                Value::Text(id.to_string()),
                Value::Text(id.instance.clone()),
                Value::Text(id.class.clone()),
                Value::Text(id.code.clone()),
                Value::Text(name.into()),
                Value::I64(now_ms()),
            ],
        );
        self.commit(
            w,
            Event::new(
                "exchange.member_added",
                actor,
                &format!("exchange/member/{id}"),
            )
            .with("name", name),
        )
        .await?;
        Ok(Member {
            id: id.clone(),
            name: name.into(),
        })
    }

    /// Registers a subsystem of an existing member; its information system may call the
    /// gateway from `networks` (comma-separated ranges).
    pub async fn add_subsystem(
        &self,
        id: &ClientId,
        name: &str,
        networks: &str,
        actor: &str,
    ) -> Result<Subsystem, ExchangeError> {
        let Some(code) = &id.subsystem else {
            return Err(ExchangeError::Invalid(format!(
                "{id} names a member, not a subsystem"
            )));
        };
        network::parse_list(networks)?;
        let member = self
            .members()
            .await?
            .into_iter()
            .find(|m| m.id == id.member)
            .ok_or_else(|| ExchangeError::NotFound(format!("no member {}", id.member)))?;
        let name = if name.trim().is_empty() {
            code.as_str()
        } else {
            name.trim()
        };
        if self.subsystem(id).await?.is_some() {
            return Err(ExchangeError::Conflict(format!(
                "subsystem {id} exists already"
            )));
        }
        let mut w = Script::new();
        w.push(
            "INSERT INTO exchange_subsystems (id, member_id, code, name, networks, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
            vec![
                Value::Text(id.to_string()),
                Value::Text(id.member.to_string()),
                Value::Text(code.clone()),
                Value::Text(name.into()),
                Value::Text(networks.trim().into()),
                Value::I64(now_ms()),
            ],
        );
        self.commit(
            w,
            Event::new(
                "exchange.subsystem_added",
                actor,
                &format!("exchange/subsystem/{id}"),
            )
            .with("name", name)
            .with("networks", networks.trim()),
        )
        .await?;
        Ok(Subsystem {
            id: id.clone(),
            name: name.into(),
            member_name: member.name,
            networks: networks.trim().into(),
            may_defer: false,
        })
    }

    /// Lets a subsystem defer when people see its calls about them (or stops it).
    pub async fn set_may_defer(
        &self,
        id: &ClientId,
        allowed: bool,
        actor: &str,
    ) -> Result<(), ExchangeError> {
        if self.subsystem(id).await?.is_none() {
            return Err(ExchangeError::NotFound(format!("no subsystem {id}")));
        }
        let mut w = Script::new();
        w.push(
            "UPDATE exchange_subsystems SET may_defer = ? WHERE id = ?",
            vec![Value::I64(i64::from(allowed)), Value::Text(id.to_string())],
        );
        let kind = if allowed {
            "exchange.deferral_allowed"
        } else {
            "exchange.deferral_withdrawn"
        };
        self.commit(
            w,
            Event::new(kind, actor, &format!("exchange/subsystem/{id}")),
        )
        .await
    }

    /// Registers a service of an existing subsystem.
    pub async fn add_service(
        &self,
        new: NewService,
        actor: &str,
    ) -> Result<Service, ExchangeError> {
        let base = new.base_url.trim().trim_end_matches('/').to_string();
        let web = base.starts_with("http://") || base.starts_with("https://");
        let own = base.strip_prefix(BUILT_IN).is_some_and(|code| {
            !code.is_empty() && code.chars().all(|c| c.is_ascii_alphanumeric())
        });
        if !(web || own) || base.contains(['?', '#']) {
            return Err(ExchangeError::Invalid(format!(
                "{base:?} is not an http or https address without query or fragment, or {BUILT_IN}CODE"
            )));
        }
        if self.subsystem(&new.id.provider).await?.is_none() {
            return Err(ExchangeError::NotFound(format!(
                "no subsystem {}",
                new.id.provider
            )));
        }
        let (kind, endpoints) = match &new.openapi {
            Some(doc) => ("OPENAPI", openapi_endpoints(doc)?),
            None => {
                let mut list = new
                    .endpoints
                    .iter()
                    .map(|e| {
                        Ok(Endpoint {
                            method: method(&e.method)?,
                            path: path(&e.path)?,
                        })
                    })
                    .collect::<Result<Vec<_>, ExchangeError>>()?;
                list.sort();
                list.dedup();
                ("REST", list)
            }
        };
        let id = new.id.to_string();
        if self.service(&new.id).await?.is_some() {
            return Err(ExchangeError::Conflict(format!(
                "service {id} exists already"
            )));
        }
        let mut w = Script::new();
        w.push(
            "INSERT INTO exchange_services (id, subsystem_id, code, kind, base_url, openapi, personal, disabled, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                Value::Text(id.clone()),
                Value::Text(new.id.provider.to_string()),
                Value::Text(new.id.code.clone()),
                Value::Str(kind),
                Value::Text(base.clone()),
                new.openapi.clone().into(),
                Value::I64(i64::from(new.personal)),
                Value::I64(0),
                Value::I64(now_ms()),
            ],
        );
        for e in &endpoints {
            w.push(
                "INSERT INTO exchange_endpoints (service_id, method, path) VALUES (?, ?, ?)",
                vec![
                    Value::Text(id.clone()),
                    Value::Text(e.method.clone()),
                    Value::Text(e.path.clone()),
                ],
            );
        }
        self.commit(
            w,
            Event::new(
                "exchange.service_added",
                actor,
                &format!("exchange/service/{id}"),
            )
            .with("kind", kind)
            .with("personal", new.personal)
            .with("endpoints", endpoints.len() as u64),
        )
        .await?;
        Ok(Service {
            id: new.id,
            kind: kind.into(),
            base_url: base,
            personal: new.personal,
            disabled: false,
            endpoints,
        })
    }

    /// Lets a client subsystem call a service's `method` (or `*`) under `path_prefix`.
    pub async fn grant(
        &self,
        service: &ServiceId,
        client: &ClientId,
        method_: &str,
        path_prefix: &str,
        actor: &str,
    ) -> Result<AccessRight, ExchangeError> {
        let (m, p) = (method(method_)?, path(path_prefix)?);
        if self.service(service).await?.is_none() {
            return Err(ExchangeError::NotFound(format!("no service {service}")));
        }
        if self.subsystem(client).await?.is_none() {
            return Err(ExchangeError::NotFound(format!("no subsystem {client}")));
        }
        if self.has_right(service, client, &m, &p).await? {
            return Err(ExchangeError::Conflict(format!(
                "{client} may already call {m} {p} of {service}"
            )));
        }
        let mut values = right_key(service, client, &m, &p);
        values.push(Value::I64(now_ms()));
        let mut w = Script::new();
        w.push(
            "INSERT INTO exchange_access (service_id, client_id, method, path, granted_ms) VALUES (?, ?, ?, ?, ?)",
            values,
        );
        let event = right_event("exchange.access_granted", actor, service, client, &m, &p);
        self.commit(w, event).await?;
        Ok(AccessRight {
            service: service.clone(),
            client: client.clone(),
            method: m,
            path: p,
        })
    }

    /// Takes a right away.
    pub async fn revoke(
        &self,
        service: &ServiceId,
        client: &ClientId,
        method_: &str,
        path_prefix: &str,
        actor: &str,
    ) -> Result<(), ExchangeError> {
        let (m, p) = (method(method_)?, path(path_prefix)?);
        if !self.has_right(service, client, &m, &p).await? {
            return Err(ExchangeError::NotFound(format!(
                "{client} has no right to {m} {p} of {service}"
            )));
        }
        let mut w = Script::new();
        w.push(
            "DELETE FROM exchange_access WHERE service_id = ? AND client_id = ? AND method = ? AND path = ?",
            right_key(service, client, &m, &p),
        );
        let event = right_event("exchange.access_revoked", actor, service, client, &m, &p);
        self.commit(w, event).await
    }

    /// Whether exactly this right is held.
    async fn has_right(
        &self,
        service: &ServiceId,
        client: &ClientId,
        method: &str,
        path: &str,
    ) -> Result<bool, ExchangeError> {
        Ok(sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM exchange_access WHERE service_id = $1 AND client_id = $2 AND method = $3 AND path = $4",
        )
        .bind(service.to_string())
        .bind(client.to_string())
        .bind(method)
        .bind(path)
        .fetch_one(self.db.pool())
        .await?
            > 0)
    }

    /// Every member, by identifier.
    pub async fn members(&self) -> Result<Vec<Member>, ExchangeError> {
        let rows =
            sqlx::query("SELECT instance, class, code, name FROM exchange_members ORDER BY id")
                .fetch_all(self.db.pool())
                .await?;
        rows.iter()
            .map(|r| {
                Ok(Member {
                    id: MemberId {
                        instance: r.try_get("instance")?,
                        class: r.try_get("class")?,
                        code: r.try_get("code")?,
                    },
                    name: r.try_get("name")?,
                })
            })
            .collect()
    }

    /// The rows of `sql`, with `arg` as `$1` when given.
    async fn rows(
        &self,
        sql: &str,
        arg: Option<String>,
    ) -> Result<Vec<civitas_store::sqlx::any::AnyRow>, ExchangeError> {
        let mut q = sqlx::query(sql);
        if let Some(a) = arg {
            q = q.bind(a);
        }
        Ok(q.fetch_all(self.db.pool()).await?)
    }

    async fn subsystems_where(
        &self,
        filter: &str,
        arg: Option<String>,
    ) -> Result<Vec<Subsystem>, ExchangeError> {
        let sql = format!(
            "SELECT s.id, s.name, s.networks, s.may_defer, m.name AS member_name FROM exchange_subsystems s JOIN exchange_members m ON m.id = s.member_id {filter} ORDER BY s.id"
        );
        self.rows(&sql, arg)
            .await?
            .iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                Ok(Subsystem {
                    id: ClientId::parse(&id)?,
                    name: r.try_get("name")?,
                    member_name: r.try_get("member_name")?,
                    networks: r.try_get("networks")?,
                    may_defer: r.try_get::<i64, _>("may_defer")? != 0,
                })
            })
            .collect()
    }

    /// Every subsystem, by identifier.
    pub async fn subsystems(&self) -> Result<Vec<Subsystem>, ExchangeError> {
        self.subsystems_where("", None).await
    }

    /// One subsystem.
    pub async fn subsystem(&self, id: &ClientId) -> Result<Option<Subsystem>, ExchangeError> {
        Ok(self
            .subsystems_where("WHERE s.id = $1", Some(id.to_string()))
            .await?
            .pop())
    }

    async fn services_where(
        &self,
        filter: &str,
        arg: Option<String>,
    ) -> Result<Vec<Service>, ExchangeError> {
        let sql = format!(
            "SELECT s.id, s.kind, s.base_url, s.personal, s.disabled, e.method, e.path FROM exchange_services s LEFT JOIN exchange_endpoints e ON e.service_id = s.id {filter} ORDER BY s.id, e.path, e.method"
        );
        let rows = self.rows(&sql, arg).await?;
        let mut out: Vec<Service> = Vec::new();
        for r in &rows {
            let id: String = r.try_get("id")?;
            let id = ServiceId::parse(&id)?;
            if out.last().is_none_or(|s| s.id != id) {
                out.push(Service {
                    id,
                    kind: r.try_get("kind")?,
                    base_url: r.try_get("base_url")?,
                    personal: r.try_get::<i64, _>("personal")? != 0,
                    disabled: r.try_get::<i64, _>("disabled")? != 0,
                    endpoints: Vec::new(),
                });
            }
            let (m, p): (Option<String>, Option<String>) =
                (r.try_get("method")?, r.try_get("path")?);
            if let (Some(method), Some(path), Some(s)) = (m, p, out.last_mut()) {
                s.endpoints.push(Endpoint { method, path });
            }
        }
        Ok(out)
    }

    /// The services a subsystem provides.
    pub async fn services(&self, provider: &ClientId) -> Result<Vec<Service>, ExchangeError> {
        self.services_where("WHERE s.subsystem_id = $1", Some(provider.to_string()))
            .await
    }

    /// One service.
    pub async fn service(&self, id: &ServiceId) -> Result<Option<Service>, ExchangeError> {
        Ok(self
            .services_where("WHERE s.id = $1", Some(id.to_string()))
            .await?
            .pop())
    }

    /// A service's OpenAPI document, when it has one.
    pub async fn openapi(&self, id: &ServiceId) -> Result<Option<String>, ExchangeError> {
        Ok(sqlx::query_scalar::<_, Option<String>>(
            "SELECT openapi FROM exchange_services WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(self.db.pool())
        .await?
        .flatten())
    }

    /// The rights a client holds on a provider subsystem's services (all of the client's
    /// rights when `provider` is `None`).
    pub async fn rights_of(
        &self,
        client: &ClientId,
        provider: Option<&ClientId>,
    ) -> Result<Vec<AccessRight>, ExchangeError> {
        let rows = sqlx::query(
            "SELECT a.service_id, a.method, a.path, s.subsystem_id FROM exchange_access a JOIN exchange_services s ON s.id = a.service_id WHERE a.client_id = $1 ORDER BY a.service_id, a.path, a.method",
        )
        .bind(client.to_string())
        .fetch_all(self.db.pool())
        .await?;
        let provider = provider.map(|p| p.to_string());
        let mut out = Vec::new();
        for r in &rows {
            let subsystem: String = r.try_get("subsystem_id")?;
            if provider.as_ref().is_some_and(|p| *p != subsystem) {
                continue;
            }
            let service: String = r.try_get("service_id")?;
            out.push(AccessRight {
                service: ServiceId::parse(&service)?,
                client: client.clone(),
                method: r.try_get("method")?,
                path: r.try_get("path")?,
            });
        }
        Ok(out)
    }

    /// Whether `client` may call `method` on `path` of `service`, as the gateway decides it.
    pub async fn may_call(
        &self,
        client: &ClientId,
        service: &ServiceId,
        method: &str,
        path: &str,
    ) -> Result<bool, ExchangeError> {
        Ok(self
            .snapshot()
            .await?
            .may_call(client, service, method, path))
    }
}

/// The endpoints of `service` that `rights` open (for `allowedMethods`): each endpoint some
/// right covers; a service without declared endpoints shows the rights themselves.
pub fn allowed_endpoints(service: &Service, rights: &[AccessRight]) -> Vec<Endpoint> {
    let mine: Vec<&AccessRight> = rights.iter().filter(|r| r.service == service.id).collect();
    if service.endpoints.is_empty() {
        let mut out: Vec<Endpoint> = mine
            .iter()
            .map(|r| Endpoint {
                method: r.method.clone(),
                path: if r.path == "/" {
                    "/**".into()
                } else {
                    format!("{}/**", r.path.trim_end_matches('/'))
                },
            })
            .collect();
        out.sort();
        return out;
    }
    service
        .endpoints
        .iter()
        .filter(|e| {
            mine.iter().any(|r| {
                (r.method == "*" || r.method == e.method || e.method == "*")
                    && path_under(&e.path, &r.path)
            })
        })
        .cloned()
        .collect()
}
