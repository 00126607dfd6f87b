//! `civitas oidc`: register, list, disable and remove OpenID Connect clients, and rotate the
//! provider's signing keys. Registrations are logged to the ledger with actor `operator:cli`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use civitas_core::config::Config;
use civitas_identity::Loa;
use civitas_identity::oidc::{AuthMethod, NewClient, Provider, Settings, SigningAlg};
use civitas_ledger::Event;
use clap::{Args, Subcommand};

use crate::OPERATOR_CLI;

/// `civitas oidc ...`
#[derive(Subcommand)]
pub enum OidcCommand {
    /// Relying parties (applications that sign people in with Civitas).
    #[command(subcommand)]
    Client(ClientCommand),
    /// The provider's signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `civitas oidc client ...`
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Register a client; prints its id and, once, its secret.
    Add(AddArgs),
    /// List the registered clients.
    List,
    /// Stop a client from signing anyone in (its tokens stop working); `enable` undoes it.
    Disable {
        /// The client id (it may begin with `-`: ids are random base64url).
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Let a disabled client sign people in again.
    Enable {
        /// The client id (it may begin with `-`: ids are random base64url).
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Delete a client with its tokens and the consents given to it.
    Remove {
        /// The client id (it may begin with `-`: ids are random base64url).
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
}

/// `civitas oidc keys ...`
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make new current RS256 and ES256 keys; the old ones keep verifying for 7 days.
    Rotate,
}

/// What `civitas oidc client add` takes.
#[derive(Args)]
pub struct AddArgs {
    /// The name people see on the consent page.
    #[arg(long)]
    name: String,
    /// A redirect URI (exact match); repeat for several.
    #[arg(long = "redirect-uri", required = true, value_name = "URI")]
    redirect_uris: Vec<String>,
    /// A post-logout redirect URI; repeat for several.
    #[arg(long = "post-logout-uri", value_name = "URI")]
    post_logout_uris: Vec<String>,
    /// Client authentication: client_secret_basic or private_key_jwt.
    #[arg(long, default_value = "client_secret_basic", value_parser = ["client_secret_basic", "private_key_jwt"])]
    auth: String,
    /// The client's public keys (a JWKS file): signing keys for private_key_jwt, and a P-256
    /// key with "use": "enc" to receive data releases encrypted (JWE, ECDH-ES + A256GCM).
    #[arg(long, value_name = "FILE")]
    jwks: Option<PathBuf>,
    /// How its ID tokens are signed: RS256 or ES256.
    #[arg(long, default_value = "RS256", value_parser = ["RS256", "ES256"])]
    alg: String,
    /// A Civitas service of its own: no consent page.
    #[arg(long)]
    first_party: bool,
    /// The weakest sign-in it accepts: low, substantial or high.
    #[arg(long, default_value = "low", value_parser = ["low", "substantial", "high"])]
    min_loa: String,
    /// A scope it may ask for; repeat for several (default: every supported scope).
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
}

/// Runs an `oidc` command against the configured database.
pub async fn run(cmd: OidcCommand, config: &Config) -> Result<()> {
    let (db, ledger) = crate::open_for_command(config).await?;
    let provider = Provider::new(
        db.clone(),
        ledger.clone(),
        Settings::new(&config.base_url()),
    );
    let outcome = match cmd {
        OidcCommand::Client(ClientCommand::Add(args)) => add(&provider, args).await,
        OidcCommand::Client(ClientCommand::List) => list(&provider).await,
        OidcCommand::Client(ClientCommand::Disable { id }) => enable(&provider, &id, false).await,
        OidcCommand::Client(ClientCommand::Enable { id }) => enable(&provider, &id, true).await,
        OidcCommand::Client(ClientCommand::Remove { id }) => {
            if !provider.remove_client(&id).await? {
                bail!("there is no client `{id}`");
            }
            println!("Removed client {id}, with its tokens and consents.");
            Ok(())
        }
        OidcCommand::Keys(KeysCommand::Rotate) => {
            let kids = provider.rotate_keys().await?;
            crate::record(
                &ledger,
                Event::new("identity.oidc_keys_rotated", OPERATOR_CLI, "oidc-keys")
                    .with("kids", kids.clone()),
            )
            .await?;
            for kid in kids {
                println!("New signing key {kid}");
            }
            println!(
                "The previous keys stay in the JWKS for 7 days, so tokens they signed still verify."
            );
            Ok(())
        }
    };
    crate::close_command(db, &ledger).await;
    outcome
}

async fn add(provider: &Provider, a: AddArgs) -> Result<()> {
    let auth_method = AuthMethod::parse(&a.auth).context("--auth")?;
    let jwks = match &a.jwks {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the JWKS file {}", path.display()))?,
        ),
        None => None,
    };
    let new = NewClient {
        name: a.name,
        redirect_uris: a.redirect_uris,
        post_logout_redirect_uris: a.post_logout_uris,
        auth_method,
        jwks,
        id_token_alg: SigningAlg::parse(&a.alg).context("--alg")?,
        scopes: a.scopes,
        first_party: a.first_party,
        min_loa: Loa::from_code(&a.min_loa).context("--min-loa")?,
    };
    let reg = provider
        .register_client(new, OPERATOR_CLI)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("client_id: {}", reg.client.client_id);
    if let Some(secret) = reg.secret {
        println!("client_secret: {secret}");
        println!("The secret is shown this once; Civitas keeps only its hash.");
    }
    Ok(())
}

async fn list(provider: &Provider) -> Result<()> {
    let clients = provider.clients().await?;
    if clients.is_empty() {
        println!("No clients are registered.");
    }
    for c in clients {
        println!(
            "{}  {}  auth={} alg={} min_loa={}{}{}",
            c.client_id,
            c.name,
            c.auth_method.name(),
            c.id_token_alg.name(),
            c.min_loa.code(),
            if c.first_party { " first-party" } else { "" },
            if c.enabled { "" } else { " DISABLED" },
        );
        for u in &c.redirect_uris {
            println!("    redirect {u}");
        }
        for u in &c.post_logout_redirect_uris {
            println!("    post-logout {u}");
        }
    }
    Ok(())
}

async fn enable(provider: &Provider, id: &str, enabled: bool) -> Result<()> {
    if !provider.set_client_enabled(id, enabled).await? {
        bail!("there is no client `{id}`");
    }
    println!(
        "Client {id} is {}.",
        if enabled { "enabled" } else { "disabled" }
    );
    Ok(())
}
