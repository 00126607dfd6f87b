//! `civitas ledger ...`: checking a ledger without trusting whoever runs it.
//!
//! `verify` checks a proof bundle offline; `verify-consistency` checks that a log's newest
//! checkpoint extends one you trusted before; `audit` rebuilds a whole log from its public
//! tiles. The last two compute everything from the C2SP tiles the log publishes: a log that
//! serves wrong tiles fails the checks rather than fooling them.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use civitas_core::config::Config;
use civitas_ledger::note::{VerifiedCheckpoint, is_verifier_key, verify_checkpoint};
use civitas_ledger::tiles::{TILE_WIDTH, TileRef};
use civitas_ledger::tree::{
    Frontier, Hash, Prefetched, Recording, node_hash, record_hash, stored_hash_index,
};
use civitas_ledger::{Event, ProofBundle, TrustedCosigner, verify_cosigned};

/// The `civitas ledger` commands.
#[derive(clap::Subcommand)]
pub enum LedgerCommand {
    /// Verify a tlog-proof bundle offline against the log's verifier key (and witnesses), or
    /// a consent receipt (`civitas-consent-….json`): its signed record too, with
    /// `--consent-key`.
    Verify {
        /// The bundle file (`.tlog-proof`), or a consent receipt (JSON).
        bundle: PathBuf,
        /// The log's verifier key, or a file holding it (such as one saved from /ledger/key).
        #[arg(long)]
        key: String,
        /// For a consent receipt: the consent records' keys, a file saved from
        /// /api/v1/consent/jwks.
        #[arg(long = "consent-key")]
        consent_key: Option<PathBuf>,
        /// A witness's verifier key whose cosignature counts; repeat for several.
        #[arg(long = "witness")]
        witnesses: Vec<String>,
        /// How many of the given witnesses must have cosigned.
        #[arg(long, default_value_t = 0)]
        quorum: usize,
    },
    /// Check that a log's newest checkpoint extends the one trusted before, then trust it.
    VerifyConsistency {
        /// Base URL of the Civitas instance, such as http://127.0.0.1:8080.
        url: String,
        /// The log's verifier key, or a file holding it.
        #[arg(long)]
        key: String,
        /// File holding the trusted checkpoint; created on first use.
        #[arg(long)]
        trusted: PathBuf,
    },
    /// Fetch a whole log, recompute every tile and root, and check every published checkpoint.
    Audit {
        /// Base URL of the Civitas instance.
        url: String,
        /// The log's verifier key or a file holding it; without it, the key the log publishes is used.
        #[arg(long)]
        key: Option<String>,
    },
    /// Append synthetic `test.load` events to the configured database's ledger, printing
    /// `ack <index>` as each becomes durable (a load generator for tests and benchmarks).
    Load {
        /// Concurrent appenders.
        #[arg(long, default_value_t = 8)]
        appenders: usize,
        /// Events per appender.
        #[arg(long, default_value_t = 1000)]
        count: u64,
    },
}

/// Runs a `civitas ledger` command.
pub async fn run(cmd: LedgerCommand, config: &Config) -> Result<()> {
    match cmd {
        LedgerCommand::Verify {
            bundle,
            key,
            consent_key,
            witnesses,
            quorum,
        } => verify(
            &bundle,
            &read_key(&key)?,
            consent_key.as_deref(),
            &witnesses,
            quorum,
        ),
        LedgerCommand::VerifyConsistency { url, key, trusted } => {
            verify_consistency(&url, &read_key(&key)?, &trusted).await
        }
        LedgerCommand::Audit { url, key } => audit(&url, key.as_deref()).await,
        LedgerCommand::Load { appenders, count } => load(config, appenders, count).await,
    }
}

/// A verifier key given inline or in a file (the line that looks like `name+id+key`).
fn read_key(arg: &str) -> Result<String> {
    let path = std::path::Path::new(arg);
    if path.is_file() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return read_key_text(&text)
            .with_context(|| format!("{} holds no verifier key", path.display()));
    }
    if !is_verifier_key(arg) {
        bail!("`{arg}` is neither a verifier key (name+id+key) nor a file");
    }
    Ok(arg.to_string())
}

fn verify(
    bundle: &std::path::Path,
    key: &str,
    consent_key: Option<&std::path::Path>,
    witnesses: &[String],
    quorum: usize,
) -> Result<()> {
    let text = std::fs::read_to_string(bundle)
        .with_context(|| format!("cannot read {}", bundle.display()))?;
    // A consent receipt: the signed record, bound to the entry its proof proves. Said only
    // once everything, witnesses included, has verified.
    let mut consent = None;
    let text = match serde_json::from_str::<civitas_consent::Receipt>(&text) {
        Ok(receipt) => {
            let path = consent_key.context(
                "this is a consent receipt: give the consent records' keys with --consent-key (a file saved from /api/v1/consent/jwks)",
            )?;
            let jwks: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            )
            .context("--consent-key is not a JWK Set")?;
            let consent_key = civitas_consent::key_from_jwks(&jwks)
                .context("--consent-key holds no Ed25519 key")?;
            let claims = civitas_consent::verify_receipt(&receipt, &consent_key, key)?;
            consent = Some(format!(
                "consent {} version {} is {} ({}), signed by the consent key",
                receipt.record_id,
                receipt.version,
                receipt.state.as_str(),
                claims["dpv_state"].as_str().unwrap_or_default()
            ));
            receipt.proof
        }
        Err(_) => text,
    };
    let parsed = ProofBundle::parse(&text)?;
    let cp = parsed.verify(key)?;
    if quorum > 0 {
        let trusted = witnesses
            .iter()
            .map(|w| TrustedCosigner::parse(w))
            .collect::<Result<Vec<_>, _>>()?;
        verify_cosigned(&parsed.checkpoint, key, &trusted, quorum)?;
    }
    let event = parsed.extra.as_deref().map(Event::decode).transpose()?;
    println!(
        "verified: entry {} is in the log `{}` of size {} (root {})",
        parsed.index,
        cp.origin,
        cp.size,
        BASE64_STANDARD.encode(cp.root.0)
    );
    if quorum > 0 {
        println!("cosigned by at least {quorum} trusted witness(es)");
    }
    if let Some(c) = consent {
        println!("verified: {c}");
    }
    if let Some(e) = event {
        println!(
            "event: {} by {} on {} at {} ms",
            e.kind, e.actor, e.object, e.time_ms
        );
    }
    Ok(())
}

/// Reads a log's public files over HTTP.
struct Remote {
    base: String,
    client: reqwest::Client,
    tiles: HashMap<(u8, u64), Vec<u8>>,
}

impl Remote {
    fn new(url: &str) -> Result<Remote> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Remote {
            base: url.trim_end_matches('/').to_string(),
            client,
            tiles: HashMap::new(),
        })
    }

    async fn get(&self, path: &str) -> Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let res = self
            .client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot fetch {url}"))?;
        if !res.status().is_success() {
            bail!("{url} answered {}", res.status());
        }
        Ok(res.bytes().await?.to_vec())
    }

    async fn text(&self, path: &str) -> Result<String> {
        String::from_utf8(self.get(path).await?).context("the log served text that is not UTF-8")
    }

    async fn checkpoint(&self, key: &str) -> Result<VerifiedCheckpoint> {
        let note = self.text("/ledger/checkpoint").await?;
        Ok(verify_checkpoint(&note, key)?)
    }

    /// The hash tile at `level` and index `n` in a tree of `size`, as wide as the tree allows.
    async fn hash_tile(&mut self, level: u8, n: u64, size: u64) -> Result<&[u8]> {
        let level_size = size >> (8 * u32::from(level));
        let width = (level_size - n * u64::from(TILE_WIDTH)).min(u64::from(TILE_WIDTH)) as u32;
        if !self.tiles.contains_key(&(level, n)) {
            let t = TileRef {
                level: Some(level),
                n,
                width,
            };
            let data = self.get(&format!("/ledger/tile/{}", t.path())).await?;
            if data.len() != width as usize * 32 {
                bail!(
                    "tile {} has {} bytes, not {}",
                    t.path(),
                    data.len(),
                    width * 32
                );
            }
            self.tiles.insert((level, n), data);
        }
        Ok(&self.tiles[&(level, n)])
    }

    /// The stored hash at tree `level`, index `n`, computed from the tile below it.
    async fn stored_hash(&mut self, level: u8, n: u64, size: u64) -> Result<Hash> {
        let tile_level = level / 8;
        let depth = u32::from(level - tile_level * 8);
        let first = n << depth;
        let tile_n = first / u64::from(TILE_WIDTH);
        let tile = self.hash_tile(tile_level, tile_n, size).await?;
        let start = (first % u64::from(TILE_WIDTH)) as usize;
        let mut hashes: Vec<Hash> = (start..start + (1usize << depth))
            .map(|i| {
                tile.get(i * 32..i * 32 + 32)
                    .map(|b| Hash(b.try_into().unwrap_or([0; 32])))
            })
            .collect::<Option<_>>()
            .context("a tile is too short for the hash it should hold")?;
        while hashes.len() > 1 {
            hashes = hashes.chunks(2).map(|p| node_hash(p[0], p[1])).collect();
        }
        Ok(hashes[0])
    }
}

use civitas_ledger::tree::tlog as tlog_tiles_reader;

async fn verify_consistency(url: &str, key: &str, trusted: &std::path::Path) -> Result<()> {
    let mut remote = Remote::new(url)?;
    let new = remote.checkpoint(key).await?;
    let old_note = match std::fs::read_to_string(trusted) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(trusted, &new.note)
                .with_context(|| format!("cannot write {}", trusted.display()))?;
            println!(
                "trusting the checkpoint of size {} for the first time (saved in {})",
                new.size,
                trusted.display()
            );
            return Ok(());
        }
        Err(e) => bail!("cannot read {}: {e}", trusted.display()),
    };
    let old =
        verify_checkpoint(&old_note, key).context("the trusted checkpoint does not verify")?;
    if new.size < old.size {
        bail!(
            "the log rolled back: it now shows size {} but size {} was trusted",
            new.size,
            old.size
        );
    }
    if new.size == old.size {
        if new.root != old.root {
            bail!("the log forked: two different roots for size {}", new.size);
        }
        println!("consistent: the log is still at size {}", new.size);
        return Ok(());
    }
    let proof = if old.size == 0 {
        Vec::new()
    } else {
        let rec = Recording::default();
        tlog_tiles_reader::prove_tree(new.size, old.size, &rec)?;
        let mut got = HashMap::new();
        for idx in rec.take() {
            let (level, n) = tlog_tiles_reader::split_stored_hash_index(idx);
            got.insert(idx, remote.stored_hash(level, n, new.size).await?);
        }
        tlog_tiles_reader::prove_tree(new.size, old.size, &Prefetched(got))?
    };
    civitas_ledger::tree::verify_consistency(&proof, new.size, new.root, old.size, old.root)
        .with_context(|| {
            format!(
                "the log's checkpoint of size {} does not extend the trusted one of size {}",
                new.size, old.size
            )
        })?;
    std::fs::write(trusted, &new.note)
        .with_context(|| format!("cannot write {}", trusted.display()))?;
    println!(
        "consistent: size {} extends the trusted size {}; now trusting size {}",
        new.size, old.size, new.size
    );
    Ok(())
}

async fn audit(url: &str, key: Option<&str>) -> Result<()> {
    let mut remote = Remote::new(url)?;
    let key = match key {
        Some(k) => read_key(k)?,
        None => {
            let published = remote.text("/ledger/key").await?;
            let k = read_key_text(&published).context("the log publishes no verifier key")?;
            println!("using the key the log publishes: {k}");
            k
        }
    };
    let cp = remote.checkpoint(&key).await?;
    println!(
        "checkpoint: `{}` size {} root {}",
        cp.origin,
        cp.size,
        BASE64_STANDARD.encode(cp.root.0)
    );
    // Rebuild every stored hash from the entries alone.
    let mut frontier = Frontier::empty();
    let mut stored: HashMap<u64, Hash> = HashMap::new();
    let mut out = Vec::new();
    let bundles = cp.size.div_ceil(u64::from(TILE_WIDTH));
    for n in 0..bundles {
        let width = (cp.size - n * u64::from(TILE_WIDTH)).min(u64::from(TILE_WIDTH)) as u32;
        let t = TileRef {
            level: None,
            n,
            width,
        };
        let data = remote.get(&format!("/ledger/tile/{}", t.path())).await?;
        let mut rest = data.as_slice();
        let mut count = 0;
        while rest.len() >= 2 {
            let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            let entry = rest
                .get(2..2 + len)
                .context("an entry bundle is truncated")?;
            out.clear();
            frontier.append(record_hash(entry), &mut out);
            stored.extend(out.iter().copied());
            rest = &rest[2 + len..];
            count += 1;
        }
        if count != width {
            bail!(
                "entry bundle {} holds {count} entries, not {width}: the log is damaged from index {}",
                t.path(),
                n * 256 + u64::from(count)
            );
        }
    }
    let mut problems = Vec::new();
    // Every hash tile the log serves must match the hashes recomputed from the entries.
    let mut level = 0u8;
    while (cp.size >> (8 * u32::from(level))) > 0 {
        let level_size = cp.size >> (8 * u32::from(level));
        for n in 0..level_size.div_ceil(u64::from(TILE_WIDTH)) {
            let tile = remote.hash_tile(level, n, cp.size).await?.to_vec();
            for (i, h) in tile.chunks(32).enumerate() {
                let at = n * u64::from(TILE_WIDTH) + i as u64;
                let expected = stored
                    .get(&stored_hash_index(level * 8, at))
                    .map(|h| h.0.to_vec());
                if expected.as_deref() != Some(h) {
                    let first_leaf = at << (8 * u32::from(level));
                    problems.push(format!("hash tile {level}/{n}, hash {i}, disagrees with the entries from index {first_leaf}"));
                    break;
                }
            }
        }
        level += 1;
    }
    if frontier.root() != cp.root {
        problems.push(format!(
            "the entries give root {} but the checkpoint says {}",
            BASE64_STANDARD.encode(frontier.root().0),
            BASE64_STANDARD.encode(cp.root.0)
        ));
    }
    // Every checkpoint the log ever published must be a prefix of today's tree.
    let listed: serde_json::Value =
        serde_json::from_slice(&remote.get("/api/v1/ledger/checkpoints").await?)?;
    let notes: Vec<String> = listed["checkpoints"]
        .as_array()
        .context("no checkpoint list")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let reader = Prefetched(stored);
    for note in &notes {
        let old = match verify_checkpoint(note, &key) {
            Ok(o) => o,
            Err(e) => {
                problems.push(format!("a published checkpoint does not verify: {e}"));
                continue;
            }
        };
        if old.size > cp.size {
            problems.push(format!(
                "a checkpoint of size {} is larger than the newest ({})",
                old.size, cp.size
            ));
            continue;
        }
        let root = tlog_tiles_reader::tree_hash(old.size, &reader)?;
        if root != old.root {
            problems.push(format!("the checkpoint of size {} does not match the entries: history before index {} was rewritten", old.size, old.size));
        }
    }
    println!(
        "audited {} entries, {} tile levels, {} published checkpoints",
        cp.size,
        level,
        notes.len()
    );
    if problems.is_empty() {
        println!("audit passed: every tile, the root and every checkpoint match the entries");
        Ok(())
    } else {
        for p in &problems {
            println!("MISMATCH: {p}");
        }
        bail!(
            "the audit found {} mismatch(es); the first: {}",
            problems.len(),
            problems[0]
        )
    }
}

/// The first line of `text` that is a verifier key.
fn read_key_text(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| is_verifier_key(l))
        .map(str::to_string)
}

async fn load(config: &Config, appenders: usize, count: u64) -> Result<()> {
    let db = crate::open_database(config).await?;
    civitas_store::migrate(&db, crate::COMPONENTS).await?;
    let (ledger, _) = crate::open_ledger(&db, config).await?;
    // Report each newly published checkpoint, so a test can check the log against it later.
    let watcher = ledger.clone();
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            if let Ok(cp) = watcher.wait_for_checkpoint(seen).await {
                println!(
                    "checkpoint {} {}",
                    cp.size,
                    BASE64_STANDARD.encode(cp.root.0)
                );
                seen = cp.size;
            } else {
                return;
            }
        }
    });
    let started = Instant::now();
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for a in 0..appenders {
        let l = ledger.clone();
        let out = out.clone();
        tasks.push(tokio::spawn(async move {
            let mut highest = 0;
            for i in 0..count {
                let e = Event::new("test.load", crate::OPERATOR_CLI, &format!("load/{a}/{i}"));
                let idx = l.append(&e).await?;
                highest = highest.max(idx);
                if let Ok(mut o) = out.lock() {
                    let _ = writeln!(o, "ack {idx}");
                    let _ = o.flush();
                }
            }
            anyhow::Ok(highest)
        }));
    }
    let mut highest = 0;
    for t in tasks {
        highest = highest.max(t.await??);
    }
    let total = appenders as u64 * count;
    let secs = started.elapsed().as_secs_f64();
    if appenders > 0 && count > 0 {
        tokio::time::timeout(std::time::Duration::from_secs(10), ledger.wait_for_checkpoint(highest))
            .await
            .map_err(|_| anyhow::anyhow!("the appended events were not published within 10 s: the witnesses refused or did not answer (see the log)"))??;
    }
    eprintln!(
        "appended {total} events in {secs:.2} s ({:.0}/s)",
        total as f64 / secs
    );
    Ok(())
}
