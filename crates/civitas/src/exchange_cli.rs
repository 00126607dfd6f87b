//! `civitas exchange`: the operator manages the exchange's directory (members, subsystems,
//! services) and access rights. Every change is logged to the ledger with actor
//! `operator:cli`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use civitas_core::config::Config;
use civitas_core::xroad::{ClientId, MemberId, ServiceId};
use civitas_exchange::network::LOOPBACK;
use civitas_exchange::{Directory, Endpoint, NewService};
use clap::{Args, Subcommand};

use crate::OPERATOR_CLI;

/// `civitas exchange ...`
#[derive(Subcommand)]
pub enum ExchangeCommand {
    /// Members: agencies and companies (`INSTANCE/CLASS/CODE`).
    #[command(subcommand)]
    Member(MemberCommand),
    /// Subsystems: a member's information systems (`INSTANCE/CLASS/CODE/SUBSYSTEM`).
    #[command(subcommand)]
    Subsystem(SubsystemCommand),
    /// Services a subsystem provides (`INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICE`).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Let a client subsystem call a service's method under a path prefix.
    Grant(RightArgs),
    /// Take a right away.
    Revoke(RightArgs),
    /// Print the whole directory and every right.
    List,
    /// Gateways: each member's gateway, its address and keys.
    #[command(subcommand)]
    Gateway(GatewayCommand),
    /// Print the anchor gateways trust this directory by (`exchange.anchor_key`).
    Anchor,
    /// The encrypted body archive (`exchange.archive_days`).
    #[command(subcommand)]
    Archive(ArchiveCommand),
}

/// `civitas exchange archive ...`
#[derive(Subcommand)]
pub enum ArchiveCommand {
    /// Decrypt and print one call's bodies (logged to the ledger, as every reading is).
    Show {
        /// The call's `X-Road-Request-Id`.
        request_id: String,
    },
}

/// `civitas exchange gateway ...`
#[derive(Subcommand)]
pub enum GatewayCommand {
    /// Register a member's gateway with its address and the public keys it printed
    /// (`civitas exchange gateway keys` on the gateway's data folder).
    Add {
        /// The member it serves, `INSTANCE/CLASS/CODE`.
        member: String,
        /// Where other gateways reach it, such as https://gateway.hro.gov.example:5500.
        #[arg(long)]
        address: String,
        /// The file with its public keys (JSON).
        #[arg(long, value_name = "FILE")]
        keys: PathBuf,
    },
    /// Revoke a member's gateway: no gateway trusts its keys once it holds the next
    /// configuration.
    Revoke {
        /// The member, `INSTANCE/CLASS/CODE`.
        member: String,
    },
    /// Print this node's gateway keys' public halves (made on first use in the data folder).
    Keys,
}

/// `civitas exchange member ...`
#[derive(Subcommand)]
pub enum MemberCommand {
    /// Register a member.
    Add {
        /// `INSTANCE/CLASS/CODE`, such as `TW/GOV/HRO`.
        id: String,
        /// Its name.
        #[arg(long)]
        name: String,
    },
}

/// `civitas exchange subsystem ...`
#[derive(Subcommand)]
pub enum SubsystemCommand {
    /// Register a subsystem of a member.
    Add {
        /// `INSTANCE/CLASS/CODE/SUBSYSTEM`.
        id: String,
        /// Its name (default: its code).
        #[arg(long, default_value = "")]
        name: String,
        /// Address ranges its information system calls the gateway from, comma-separated.
        #[arg(long, default_value = LOOPBACK)]
        networks: String,
    },
    /// Whether the law lets it defer, for a stated reason and a limited time, when people
    /// see its calls about them (an investigation, say).
    MayDefer {
        /// `INSTANCE/CLASS/CODE/SUBSYSTEM`.
        id: String,
        /// `yes` or `no`.
        #[arg(value_parser = ["yes", "no"])]
        allowed: String,
    },
}

/// `civitas exchange service ...`
#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Register a service of a subsystem.
    Add(ServiceArgs),
}

/// What `civitas exchange service add` takes.
#[derive(Args)]
pub struct ServiceArgs {
    /// `INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICE`.
    id: String,
    /// Where the provider's information system serves it (the request's path follows).
    #[arg(long)]
    url: String,
    /// Its OpenAPI 3 document (JSON), which gives its endpoints.
    #[arg(long, value_name = "FILE")]
    openapi: Option<PathBuf>,
    /// An endpoint, `METHOD /path` (`*` for any method or path segment); repeat for several.
    #[arg(long = "endpoint", value_name = "METHOD PATH")]
    endpoints: Vec<String>,
    /// Calls are about people: they must name the person, a purpose and a legal basis.
    #[arg(long)]
    personal: bool,
}

/// What `grant` and `revoke` take.
#[derive(Args)]
pub struct RightArgs {
    /// The service, `INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICE`.
    service: String,
    /// The client subsystem, `INSTANCE/CLASS/CODE/SUBSYSTEM`.
    client: String,
    /// The HTTP method, or `*` for any.
    #[arg(long, default_value = "*")]
    method: String,
    /// The path prefix (`/` for the whole service).
    #[arg(long, default_value = "/")]
    path: String,
}

/// Runs an `exchange` command against the configured database.
pub async fn run(cmd: ExchangeCommand, config: &Config) -> Result<()> {
    if let ExchangeCommand::Gateway(GatewayCommand::Keys) = cmd {
        // The gateway's own files, not the database: this works beside a running gateway.
        crate::prepare_data_dir(&config.data_dir)?;
        let keys = civitas_exchange::keys::GatewayKeys::load_or_create(&config.data_dir)?;
        println!("{}", serde_json::to_string_pretty(&keys.public())?);
        return Ok(());
    }
    let (db, ledger) = crate::open_for_command(config).await?;
    let d = Directory::new(db.clone(), ledger.clone(), &config.exchange_instance);
    let outcome = command(&d, cmd, &config.data_dir).await;
    crate::close_command(db, &ledger).await;
    outcome
}

fn client(text: &str) -> Result<ClientId> {
    ClientId::parse(text).with_context(|| format!("`{text}`"))
}

fn service(text: &str) -> Result<ServiceId> {
    ServiceId::parse(text).with_context(|| format!("`{text}`"))
}

async fn command(d: &Directory, cmd: ExchangeCommand, config_dir: &std::path::Path) -> Result<()> {
    let failed = |e: civitas_exchange::ExchangeError| anyhow::anyhow!("{e}");
    match cmd {
        ExchangeCommand::Member(MemberCommand::Add { id, name }) => {
            let id = client(&id)?;
            if id.subsystem.is_some() {
                anyhow::bail!("`{id}` names a subsystem; a member is INSTANCE/CLASS/CODE");
            }
            let m: MemberId = id.member;
            d.add_member(&m, &name, OPERATOR_CLI)
                .await
                .map_err(failed)?;
            println!("Added member {m} ({}).", name.trim());
        }
        ExchangeCommand::Subsystem(SubsystemCommand::Add { id, name, networks }) => {
            let id = client(&id)?;
            let s = d
                .add_subsystem(&id, &name, &networks, OPERATOR_CLI)
                .await
                .map_err(failed)?;
            println!(
                "Added subsystem {} ({}); its information system may call from {}.",
                s.id, s.name, s.networks
            );
        }
        ExchangeCommand::Subsystem(SubsystemCommand::MayDefer { id, allowed }) => {
            let id = client(&id)?;
            let yes = allowed == "yes";
            d.set_may_defer(&id, yes, OPERATOR_CLI)
                .await
                .map_err(failed)?;
            if yes {
                println!(
                    "{id} may now defer, for a stated reason and at most {} days, when people see its calls about them.",
                    civitas_exchange::directory::MAX_DEFERRAL_DAYS
                );
            } else {
                println!("{id} may no longer defer.");
            }
        }
        ExchangeCommand::Service(ServiceCommand::Add(a)) => {
            let openapi = match &a.openapi {
                Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read the OpenAPI document {}", path.display())
                })?),
                None => None,
            };
            let endpoints = a
                .endpoints
                .iter()
                .map(|e| Endpoint::parse(e).with_context(|| "--endpoint".to_string()))
                .collect::<Result<Vec<_>>>()?;
            let s = d
                .add_service(
                    NewService {
                        id: service(&a.id)?,
                        base_url: a.url,
                        openapi,
                        endpoints,
                        personal: a.personal,
                    },
                    OPERATOR_CLI,
                )
                .await
                .map_err(failed)?;
            println!(
                "Added {} service {} at {} with {} endpoints{}.",
                s.kind,
                s.id,
                s.base_url,
                s.endpoints.len(),
                if s.personal {
                    "; calls are about people"
                } else {
                    ""
                }
            );
        }
        ExchangeCommand::Grant(r) => {
            let right = d
                .grant(
                    &service(&r.service)?,
                    &client(&r.client)?,
                    &r.method,
                    &r.path,
                    OPERATOR_CLI,
                )
                .await
                .map_err(failed)?;
            println!(
                "{} may now call {} {} of {}.",
                right.client, right.method, right.path, right.service
            );
        }
        ExchangeCommand::Revoke(r) => {
            let (s, c) = (service(&r.service)?, client(&r.client)?);
            d.revoke(&s, &c, &r.method, &r.path, OPERATOR_CLI)
                .await
                .map_err(failed)?;
            println!("{c} may no longer call {} {} of {s}.", r.method, r.path);
        }
        ExchangeCommand::List => list(d).await.map_err(failed)?,
        ExchangeCommand::Anchor => {
            let anchor = d.anchor().await.map_err(failed)?;
            println!("exchange.instance = \"{}\"", anchor.instance);
            println!("exchange.anchor_key = \"{}\"", anchor.key);
        }
        ExchangeCommand::Gateway(GatewayCommand::Add {
            member,
            address,
            keys,
        }) => {
            let member = MemberId::parse(&member).with_context(|| format!("`{member}`"))?;
            let text = std::fs::read_to_string(&keys)
                .with_context(|| format!("cannot read the keys file {}", keys.display()))?;
            let public: civitas_exchange::keys::PublicKeys = serde_json::from_str(&text)
                .with_context(|| {
                    format!(
                        "{} is not the output of `civitas exchange gateway keys`",
                        keys.display()
                    )
                })?;
            let g = d
                .add_gateway(&member, &address, &public, OPERATOR_CLI)
                .await
                .map_err(failed)?;
            println!(
                "Added the gateway of {} at {}; gateways trust it from their next configuration.",
                g.member, g.address
            );
        }
        ExchangeCommand::Gateway(GatewayCommand::Revoke { member }) => {
            let member = MemberId::parse(&member).with_context(|| format!("`{member}`"))?;
            d.revoke_gateway(&member, OPERATOR_CLI)
                .await
                .map_err(failed)?;
            println!(
                "Revoked the gateway of {member}; no gateway trusts its keys from the next configuration."
            );
        }
        ExchangeCommand::Archive(ArchiveCommand::Show { request_id }) => {
            archive_show(d, &request_id, config_dir).await?;
        }
        // Answered from the data folder before the database opens (see `run`).
        ExchangeCommand::Gateway(GatewayCommand::Keys) => {}
    }
    Ok(())
}

/// Decrypts one archived call, after logging that the operator read it.
async fn archive_show(d: &Directory, request_id: &str, data_dir: &std::path::Path) -> Result<()> {
    use base64::Engine;
    if !data_dir.join(civitas_exchange::archive::KEY_FILE).exists() {
        anyhow::bail!(
            "there is no archive key in {}; the archive is off here (exchange.archive_days)",
            data_dir.display()
        );
    }
    let key = civitas_exchange::archive::ArchiveKey::load_or_create(data_dir)?;
    let sealed = civitas_exchange::archive::sealed(d.db(), request_id)
        .await?
        .with_context(|| {
            format!("no archived call {request_id} (never archived, or past its retention)")
        })?;
    d.log_archive_read(request_id, OPERATOR_CLI).await?;
    let record = key.open(request_id, &sealed)?;
    let text = |b64: &str| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_default();
        match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => format!(
                "(binary, base64) {}",
                base64::engine::general_purpose::STANDARD.encode(e.into_bytes())
            ),
        }
    };
    println!(
        "{} {}  answered {}",
        record.method, record.target, record.status
    );
    println!(
        "request body{}:",
        if record.request_cut {
            " (first 1 MiB)"
        } else {
            ""
        }
    );
    println!("{}", text(&record.request_body));
    println!(
        "answer body{}:",
        if record.response_cut {
            " (first 1 MiB)"
        } else {
            ""
        }
    );
    println!("{}", text(&record.response_body));
    Ok(())
}

async fn list(d: &Directory) -> Result<(), civitas_exchange::ExchangeError> {
    let members = d.members().await?;
    let subsystems = d.subsystems().await?;
    if members.is_empty() {
        println!("The directory is empty.");
        return Ok(());
    }
    for m in members {
        println!("member {}  {}", m.id, m.name);
        for s in subsystems.iter().filter(|s| s.id.member == m.id) {
            println!(
                "  subsystem {}  {}  (calls from {}){}",
                s.id,
                s.name,
                s.networks,
                if s.may_defer { "  may defer" } else { "" }
            );
            for svc in d.services(&s.id).await? {
                println!(
                    "    service {}  {}  {}{}{}",
                    svc.id,
                    svc.kind,
                    svc.base_url,
                    if svc.personal { "  personal" } else { "" },
                    if svc.disabled { "  disabled" } else { "" }
                );
                for e in &svc.endpoints {
                    println!("      {} {}", e.method, e.path);
                }
            }
            for r in d.rights_of(&s.id, None).await? {
                println!("    may call {} {} of {}", r.method, r.path, r.service);
            }
        }
    }
    for g in d.gateways().await? {
        println!(
            "gateway of {}  {}  signing key {}",
            g.member, g.address, g.signing_key
        );
    }
    Ok(())
}
