//! `civitas bench exchange`: requests per second and added latency through the exchange's
//! gateway, against the same clients calling the provider directly, in alternating rounds of
//! the same run; the gateway's resident memory; and one large body streamed through it (time
//! and the gateway's peak memory).
//!
//! The gateway is this executable run as `civitas serve` in a child process, with a directory
//! set up by `civitas exchange` commands, so its memory is measured on its own. The provider
//! (a small JSON service) and the clients run in this process. Every process shares the
//! machine's cores. Each call through the gateway is checked and logged to the ledger, as in
//! production.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench::{machine, percentile};

/// Options of `civitas bench exchange`.
#[derive(clap::Args, Debug)]
pub struct ExchangeArgs {
    /// Seconds of load on each path (in alternating rounds of about two seconds).
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Size in MiB of the body streamed through the gateway (0 skips it).
    #[arg(long, default_value_t = 1024)]
    body_mib: u64,
    /// Scratch folder (removed afterwards). Default: a new folder under the system temp dir.
    #[arg(long)]
    scratch: Option<PathBuf>,
}

/// Runs the benchmark and prints its figures.
pub fn exchange(args: &ExchangeArgs) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the civitas executable")?;
    crate::bench::in_scratch(&args.scratch, "exchange", |scratch| {
        crate::bench::block_on(run(&exe, scratch, args))
    })
}

/// The provider's information system: `GET /items/{n}` answers a small JSON record;
/// `POST /upload` reads the body as it comes and answers how many bytes it got.
async fn provider() -> Result<std::net::SocketAddr> {
    use axum::routing::{get, post};
    async fn item(
        axum::extract::Path(n): axum::extract::Path<u64>,
    ) -> axum::Json<serde_json::Value> {
        axum::Json(serde_json::json!({ "item": n, "name": "Bench item", "in_stock": n % 7 }))
    }
    async fn upload(body: axum::body::Body) -> axum::Json<serde_json::Value> {
        use futures_util::StreamExt;
        let mut stream = body.into_data_stream();
        let mut bytes = 0u64;
        while let Some(Ok(chunk)) = stream.next().await {
            bytes += chunk.len() as u64;
        }
        axum::Json(serde_json::json!({ "bytes": bytes }))
    }
    let app = axum::Router::new()
        .route("/items/{n}", get(item))
        .route("/upload", post(upload));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// Runs `civitas <args> --data <data>` to completion.
fn civitas(exe: &Path, data: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(exe)
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .with_context(|| format!("cannot run civitas {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "civitas {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Starts the gateway (`civitas serve`) and returns it with its address.
fn gateway(exe: &Path, data: &Path) -> Result<(Child, String)> {
    use std::io::BufRead;
    let mut child = Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("CIVITAS_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut lines = std::io::BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let url = lines.by_ref().map_while(Result::ok).find_map(|l| {
        Some(
            l.split(" at ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .trim_end_matches('/')
                .to_string(),
        )
    });
    std::thread::spawn(move || lines.for_each(drop));
    match url {
        Some(u) => Ok((child, u)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the gateway did not start")
        }
    }
}

/// A process's resident memory in KiB (0 when it cannot be read).
fn rss_kib(pid: u32) -> u64 {
    crate::bench::resident_kib(pid).unwrap_or(0)
}

/// Which path the clients take now.
const IDLE: u64 = 0;
const DIRECT: u64 = 1;
const GATEWAY: u64 = 2;
const STOP: u64 = 3;

async fn run(exe: &Path, scratch: &Path, args: &ExchangeArgs) -> Result<()> {
    println!("civitas bench exchange — {}", machine());
    let provider = provider().await?;
    let data = scratch.join("gateway");
    std::fs::create_dir_all(&data)?;
    let url = format!("http://{provider}");
    for step in [
        vec!["migrate"],
        vec![
            "exchange",
            "member",
            "add",
            "TW/BENCH/PROVIDER",
            "--name",
            "Provider",
        ],
        vec![
            "exchange",
            "member",
            "add",
            "TW/BENCH/CLIENT",
            "--name",
            "Client",
        ],
        vec!["exchange", "subsystem", "add", "TW/BENCH/PROVIDER/app"],
        vec!["exchange", "subsystem", "add", "TW/BENCH/CLIENT/app"],
        vec![
            "exchange",
            "service",
            "add",
            "TW/BENCH/PROVIDER/app/items",
            "--url",
            &url,
            "--endpoint",
            "GET /items/*",
            "--endpoint",
            "POST /upload",
        ],
        vec![
            "exchange",
            "grant",
            "TW/BENCH/PROVIDER/app/items",
            "TW/BENCH/CLIENT/app",
        ],
    ] {
        civitas(exe, &data, &step)?;
    }
    let (mut child, base) = gateway(exe, &data)?;
    let result = measure(args, &child, &base, &url).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    result
}

async fn measure(args: &ExchangeArgs, child: &Child, base: &str, direct: &str) -> Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let through = format!("{base}/r1/TW/BENCH/PROVIDER/app/items");
    // The gateway answers before the load starts.
    let probe = client
        .get(format!("{through}/items/1"))
        .header("X-Road-Client", "TW/BENCH/CLIENT/app")
        .send()
        .await?;
    if !probe.status().is_success() {
        bail!(
            "the gateway answered {}: {}",
            probe.status(),
            probe.text().await?
        );
    }
    let phase = Arc::new(AtomicU64::new(IDLE));
    let in_flight = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let (client, phase, in_flight) = (client.clone(), phase.clone(), in_flight.clone());
        let (direct, through) = (direct.to_string(), through.clone());
        tasks.push(tokio::spawn(async move {
            let (mut d, mut g) = (Vec::new(), Vec::new());
            let mut n = i as u64;
            loop {
                let p = phase.load(Ordering::SeqCst);
                if p == STOP {
                    break;
                }
                if p == IDLE {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                in_flight.fetch_add(1, Ordering::SeqCst);
                if phase.load(Ordering::SeqCst) != p {
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                n += 1;
                let t = Instant::now();
                let res = if p == DIRECT {
                    client.get(format!("{direct}/items/{n}")).send().await
                } else {
                    client
                        .get(format!("{through}/items/{n}"))
                        .header("X-Road-Client", "TW/BENCH/CLIENT/app")
                        .send()
                        .await
                };
                let ok = match res {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                in_flight.fetch_sub(1, Ordering::SeqCst);
                if !ok {
                    return Err(anyhow::anyhow!("a request failed"));
                }
                if p == DIRECT { &mut d } else { &mut g }.push(t.elapsed().as_secs_f64());
            }
            Ok((d, g))
        }));
    }
    let rounds = (args.secs / 2).max(1);
    let round = Duration::from_secs_f64(args.secs as f64 / rounds as f64);
    println!(
        "{} clients, direct and through the gateway in {rounds} alternating rounds of {:.1} s each …",
        args.clients,
        round.as_secs_f64()
    );
    let mut spent = [0.0f64; 2];
    let mut rss_under_load = 0;
    for _ in 0..rounds {
        for (i, p) in [DIRECT, GATEWAY].into_iter().enumerate() {
            let started = Instant::now();
            phase.store(p, Ordering::SeqCst);
            tokio::time::sleep(round).await;
            if p == GATEWAY {
                rss_under_load = rss_under_load.max(rss_kib(child.id()));
            }
            phase.store(IDLE, Ordering::SeqCst);
            while in_flight.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            spent[i] += started.elapsed().as_secs_f64();
        }
    }
    phase.store(STOP, Ordering::SeqCst);
    let (mut d, mut g) = (Vec::new(), Vec::new());
    for t in tasks {
        let (a, b) = t.await??;
        d.extend(a);
        g.extend(b);
    }
    d.sort_by(f64::total_cmp);
    g.sort_by(f64::total_cmp);
    let (rate_d, rate_g) = (d.len() as f64 / spent[0], g.len() as f64 / spent[1]);
    let ms = |v: &[f64], p: f64| percentile(v, p) * 1e3;
    let rss = rss_kib(child.id());

    // One large body through the gateway, with its peak memory sampled as it passes.
    let big = if args.body_mib > 0 {
        Some(stream_body(&client, &through, child.id(), args.body_mib).await?)
    } else {
        None
    };

    println!();
    println!("| figure | value | p50 | p99 | baseline | ratio to baseline | target |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| GET, direct to the provider ({} clients) | {rate_d:.0}/s | {:.2} ms | {:.2} ms | — | — | the baseline |",
        args.clients,
        ms(&d, 0.5),
        ms(&d, 0.99)
    );
    println!(
        "| GET through the gateway: checked, forwarded, logged ({} clients) | {rate_g:.0}/s | {:.2} ms | {:.2} ms | direct {rate_d:.0}/s | {:.3} | ≥ 5,000/s through two gateways |",
        args.clients,
        ms(&g, 0.5),
        ms(&g, 0.99),
        rate_g / rate_d
    );
    println!(
        "| latency the gateway adds | | {:.2} ms | {:.2} ms | | | p99 ≤ 5 ms |",
        ms(&g, 0.5) - ms(&d, 0.5),
        ms(&g, 0.99) - ms(&d, 0.99)
    );
    println!(
        "| gateway resident memory, under load / after | {:.1} MiB / {:.1} MiB | | | | | < 100 MB |",
        rss_under_load as f64 / 1024.0,
        rss as f64 / 1024.0
    );
    if let Some((secs, before, peak)) = big {
        println!(
            "| {} MiB body streamed through the gateway | {secs:.1} s ({:.0} MiB/s) | | | | | flat memory |",
            args.body_mib,
            args.body_mib as f64 / secs
        );
        println!(
            "| gateway memory before / peak while streaming it | {:.1} MiB / {:.1} MiB | | | | | |",
            before as f64 / 1024.0,
            peak as f64 / 1024.0
        );
    }
    println!();
    println!(
        "One gateway serves both sides here (the all-in-one server); gateway-to-gateway TLS and signatures are not built yet."
    );
    Ok(())
}

/// Posts `mib` MiB through the gateway, generated as it goes; returns the seconds it took and
/// the gateway's resident memory before and at its highest while the body passed.
async fn stream_body(
    client: &reqwest::Client,
    through: &str,
    pid: u32,
    mib: u64,
) -> Result<(f64, u64, u64)> {
    let before = rss_kib(pid);
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(rss_kib(pid), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let chunk = bytes::Bytes::from(vec![0x5au8; 256 * 1024]);
    let chunks = mib * 4;
    let body = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let started = Instant::now();
    let res = client
        .post(format!("{through}/upload"))
        .header("X-Road-Client", "TW/BENCH/CLIENT/app")
        .header("Content-Type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?;
    let status = res.status();
    let answer: serde_json::Value = res.json().await?;
    let secs = started.elapsed().as_secs_f64();
    done.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    if !status.is_success() || answer["bytes"].as_u64() != Some(mib * 1024 * 1024) {
        bail!("the large body did not arrive whole: {status} {answer}");
    }
    Ok((secs, before, peak.load(Ordering::SeqCst)))
}
