//! `civitas notify`: sending services, their API keys, guest lists and templates. Each
//! change is logged to the ledger with actor `operator:cli`; a key's secret is printed once
//! and never logged.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use civitas_core::config::Config;
use civitas_notify::{Channel, KeyType, Language, NewTemplate, Notify, Text};
use clap::Subcommand;

use crate::OPERATOR_CLI;

/// `civitas notify ...`
#[derive(Subcommand)]
pub enum NotifyCommand {
    /// Register a sending service (in trial: its live keys reach only its guest list);
    /// prints its id.
    AddService {
        /// Its name, as recipients see it.
        name: String,
        /// The agency (its code, such as HRO) whose staff manage its templates in the
        /// admin pages (/admin/notify).
        #[arg(long)]
        agency: Option<String>,
    },
    /// Take a service out of trial: its live keys reach anyone.
    MakeLive {
        /// The service id.
        service: String,
    },
    /// Make an API key; prints it once (`{name}-{service id}-{secret}`).
    AddKey {
        /// The service id.
        service: String,
        /// The key's name.
        name: String,
        /// live (anyone, once the service is live), team (the guest list only) or test
        /// (nothing is delivered).
        #[arg(long = "type", default_value = "test", value_parser = ["live", "team", "test"])]
        key_type: String,
    },
    /// Set how many messages a service may send on each channel a day (Taiwan's day; test
    /// keys' do not count).
    SetDailyLimit {
        /// The service id.
        service: String,
        /// Messages a day per channel.
        limit: i64,
    },
    /// Revoke an API key: its calls are refused from now on.
    RevokeKey {
        /// The service id.
        service: String,
        /// The key's id (`add-key` prints it beside the key).
        key: String,
    },
    /// Let a team key, or a live key in trial, reach an e-mail address or phone number.
    AddGuest {
        /// The service id.
        service: String,
        /// The e-mail address or phone number.
        recipient: String,
    },
    /// Add a template (or, with --template, a new version of one); prints its id and version.
    AddTemplate {
        /// The service id.
        service: String,
        /// email, sms or letter.
        #[arg(long = "type", value_parser = ["email", "sms", "letter"])]
        channel: String,
        /// Its name.
        #[arg(long)]
        name: String,
        /// The subject (e-mail) or heading (letter).
        #[arg(long)]
        subject: Option<String>,
        /// A file with its text, `((placeholders))` and all.
        #[arg(long)]
        body: PathBuf,
        /// The template a new version is made of.
        #[arg(long)]
        template: Option<String>,
        /// How urgent its messages are: emergency ones are delivered first, then priority
        /// ones (sign-in codes), then normal ones.
        #[arg(long, default_value = "normal", value_parser = ["normal", "priority", "emergency"])]
        priority: String,
        /// A notice the law requires: it reaches the person whatever their preferences and
        /// unsubscribes (in their inbox, or by the channel it is sent by).
        #[arg(long)]
        essential: bool,
        /// The language of the subject and text: zh-TW or en.
        #[arg(long, default_value = "zh-TW")]
        lang: String,
        /// A file with the text in the other language (the same placeholders); people who
        /// chose that language get it.
        #[arg(long)]
        translation: Option<PathBuf>,
        /// The subject or heading in the other language.
        #[arg(long)]
        translation_subject: Option<String>,
    },
    /// Sets where a service's delivery-status callbacks go, and the bearer token they carry
    /// (read from standard input, so that it is not seen in the process list).
    SetCallback {
        /// The service id.
        service: String,
        /// The receiver's address (https://).
        #[arg(long)]
        url: String,
    },
}

/// Runs a `notify` command against the configured database.
pub async fn run(cmd: NotifyCommand, config: &Config) -> Result<()> {
    let (db, ledger) = crate::open_for_command(config).await?;
    let notify = Notify::new(db.clone(), ledger.clone());
    let outcome = run_with(&notify, cmd).await;
    crate::close_command(db, &ledger).await;
    outcome
}

async fn run_with(notify: &Notify, cmd: NotifyCommand) -> Result<()> {
    match cmd {
        NotifyCommand::AddService { name, agency } => {
            let s = match agency {
                Some(a) => {
                    notify
                        .create_agency_service(&name, &a, OPERATOR_CLI)
                        .await?
                }
                None => notify.create_service(&name, OPERATOR_CLI).await?,
            };
            println!("{}", s.id);
            eprintln!(
                "Registered the service {:?}, in trial until `civitas notify make-live`.",
                s.name
            );
        }
        NotifyCommand::MakeLive { service } => {
            notify.make_live(&service, OPERATOR_CLI).await?;
            println!("The service {service} is live: its live keys reach anyone.");
        }
        NotifyCommand::AddKey {
            service,
            name,
            key_type,
        } => {
            let kind = KeyType::parse(&key_type).context("--type")?;
            let (id, key) = notify
                .create_key(&service, &name, kind, OPERATOR_CLI)
                .await?;
            println!("{key}");
            eprintln!(
                "This is the only time the key is shown: keep it secret. Its id, to revoke it: {id}"
            );
        }
        NotifyCommand::SetDailyLimit { service, limit } => {
            notify
                .set_daily_limit(&service, limit, OPERATOR_CLI)
                .await?;
            println!("The service {service} may send {limit} messages a day on each channel.");
        }
        NotifyCommand::RevokeKey { service, key } => {
            if !notify.revoke_key(&service, &key, OPERATOR_CLI).await? {
                bail!("the service {service} has no key {key} in force");
            }
            println!("Revoked the key {key}.");
        }
        NotifyCommand::AddGuest { service, recipient } => {
            if notify.service(&service).await?.is_none() {
                bail!("there is no service {service}");
            }
            notify
                .add_to_guest_list(&service, &recipient, OPERATOR_CLI)
                .await?;
            println!("Added to the guest list of {service}.");
        }
        NotifyCommand::AddTemplate {
            service,
            channel,
            name,
            subject,
            body,
            template,
            priority,
            essential,
            lang,
            translation,
            translation_subject,
        } => {
            if notify.service(&service).await?.is_none() {
                bail!("there is no service {service}");
            }
            let read = |path: &PathBuf| {
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))
            };
            let text = read(&body)?;
            let Some(lang) = Language::parse(&lang) else {
                bail!("--lang {lang}: the language is zh-TW or en");
            };
            let translation = match (translation, translation_subject) {
                (Some(path), subject) => Some(Text {
                    lang: lang.other(),
                    subject,
                    body: read(&path)?,
                }),
                (None, Some(_)) => bail!("--translation-subject needs --translation"),
                (None, None) => None,
            };
            let t = notify
                .save_template(
                    &service,
                    template.as_deref(),
                    &NewTemplate {
                        channel: Channel::parse(&channel).context("--type")?,
                        name,
                        subject,
                        body: text,
                        priority: civitas_notify::Priority::parse(&priority)
                            .context("--priority")?,
                        essential,
                        lang,
                        translation,
                    },
                    OPERATOR_CLI,
                )
                .await?;
            println!("{} {}", t.id, t.version);
        }
        NotifyCommand::SetCallback { service, url } => {
            if notify.service(&service).await?.is_none() {
                bail!("there is no service {service}");
            }
            let mut token = String::new();
            std::io::stdin()
                .read_line(&mut token)
                .context("cannot read the bearer token from standard input")?;
            notify
                .set_callback(&service, &url, token.trim(), OPERATOR_CLI)
                .await?;
            println!("callbacks of {service} go to {url}");
        }
    }
    Ok(())
}
