//! `civitas bench exchange`: requests per second and added latency through two exchange
//! gateways (the client's and the provider's), against the same clients calling the provider
//! directly, in alternating rounds of the same run; each gateway's resident memory; and one
//! large body streamed through both (time and each gateway's peak memory).
//!
//! Latency is given twice. With 64 clients calling as fast as answers come, the machine is
//! saturated and a call's latency is mostly its wait in line: by Little's law, 64 clients at
//! 5,000 calls/s wait 12.8 ms on average, whatever the gateways do. So the latency the
//! gateways add is also measured at a fixed offered rate below saturation (`--rate`), open
//! loop: calls start on a schedule whatever the answers, and each is timed from its scheduled
//! start, so a stall shows in the figures instead of slowing the schedule.
//!
//! Every node is this executable in a child process, so its memory is measured on its own:
//! the directory (`civitas serve`, set up by `civitas exchange` commands) and the two
//! gateways (`civitas serve --role gateway`), which poll its signed configuration and talk
//! to each other over mutual TLS 1.3 with every message signed and verified. The provider
//! (a small JSON service) and the clients run in this process. Every process shares the
//! machine's cores. Each call is checked and logged to the ledger by both gateways, as in
//! production.
//!
//! The clients and the provider stand in for other agencies' systems, which in production
//! run on machines of their own. Here they share two cores with the gateways, and each
//! answer a gateway writes wakes them: under Linux's default policy the woken thread takes
//! the core from the gateway that woke it, and the two take turns on it, a switch for
//! every answer, which the run would then count as the gateways' cost. So while the clients
//! call as fast as answers come, this process runs as `SCHED_BATCH` (`--load-sched`):
//! woken, it waits its turn or goes to an idle core. The latency at a fixed rate is
//! measured with the default policy, as a client on a machine of its own reads its answer
//! at once. The gateways keep the default policy (`--gateway-sched`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench::{Policy, machine, percentile};

/// Options of `civitas bench exchange`.
#[derive(clap::Args, Debug)]
pub struct ExchangeArgs {
    /// Seconds of load on each path (in alternating rounds of about two seconds).
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Calls per second offered on each path for the latency at a fixed rate (0 skips it).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Size in MiB of the body streamed through the gateway (0 skips it).
    #[arg(long, default_value_t = 1024)]
    body_mib: u64,
    /// Threads that run each gateway's requests (its `workers` setting; 0 is one per
    /// core). Here two gateways, the directory and this benchmark share the machine's cores,
    /// so each gateway runs with one (its main thread runs every request), as an operator
    /// sets a process that shares a machine: with one per core each, eight threads take
    /// turns on two cores, and a call whose task waits on a thread the system has paused
    /// waits a time slice (milliseconds) for it.
    #[arg(long, default_value_t = 1)]
    gateway_workers: usize,
    /// Scheduling policy of this process (the clients and the provider, which in
    /// production run on machines of their own) while the clients call as fast as answers
    /// come; see the module's documentation.
    #[arg(long, value_enum, default_value_t = Policy::Batch)]
    load_sched: Policy,
    /// Scheduling policy of the gateways' processes.
    #[arg(long, value_enum, default_value_t = Policy::Normal)]
    gateway_sched: Policy,
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

/// Runs `civitas <args> --data <data>` to completion and returns what it printed.
fn civitas(exe: &Path, data: &Path, args: &[&str]) -> Result<String> {
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
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A node in a child process.
struct Node {
    child: Child,
    /// Its HTTP address.
    url: String,
    /// A gateway's address for other gateways.
    peers: Option<String>,
}

impl Node {
    /// Starts `civitas serve` with `args` and `env` on `listen`, and reads its addresses.
    fn start(
        exe: &Path,
        data: &Path,
        listen: &str,
        args: &[&str],
        env: &[(&str, &str)],
        policy: Policy,
    ) -> Result<Node> {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(exe);
        // SAFETY: between fork and exec the child only makes one system call.
        unsafe {
            cmd.pre_exec(move || policy.apply_here());
        }
        cmd.args(["serve", "--listen", listen])
            .args(args)
            .arg("--data")
            .arg(data)
            .env("CIVITAS_LOG_LEVEL", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let mut lines = std::io::BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let (mut url, mut peers) = (None, None);
        for line in lines.by_ref().map_while(Result::ok) {
            let at = line
                .split(" at ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .map(|u| u.trim_end_matches('/').to_string());
            if line.contains("takes calls from other gateways") {
                peers = at;
            } else if line.starts_with("Civitas is running") {
                url = at;
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        match url {
            Some(url) => Ok(Node { child, url, peers }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("a node did not start")
            }
        }
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// A benchmark that fails half-way leaves no node running.
impl Drop for Node {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A process's resident memory in KiB (0 when it cannot be read).
fn rss_kib(pid: u32) -> u64 {
    crate::bench::resident_kib(pid).unwrap_or(0)
}

async fn run(exe: &Path, scratch: &Path, args: &ExchangeArgs) -> Result<()> {
    println!("civitas bench exchange — {}", machine());
    println!(
        "each gateway runs with workers = {} (0: one per core; `--gateway-workers`) as {} (`--gateway-sched`); the clients and the provider as {} at {} clients (`--load-sched`), as SCHED_OTHER at a fixed rate",
        args.gateway_workers,
        args.gateway_sched.name(),
        args.load_sched.name(),
        args.clients
    );
    let provider = provider().await?;
    let (dir, ga, gb) = (
        scratch.join("directory"),
        scratch.join("gateway-client"),
        scratch.join("gateway-provider"),
    );
    for d in [&dir, &ga, &gb] {
        std::fs::create_dir_all(d)?;
    }
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
        civitas(exe, &dir, &step)?;
    }
    let anchor = civitas(exe, &dir, &["exchange", "anchor"])?;
    let key = anchor
        .lines()
        .find_map(|l| l.strip_prefix("exchange.anchor_key = \""))
        .context("no anchor key")?
        .trim_end_matches('"')
        .to_string();
    let mut key_files = Vec::new();
    for g in [&ga, &gb] {
        let file = g.join("public-keys.json");
        std::fs::write(&file, civitas(exe, g, &["exchange", "gateway", "keys"])?)?;
        key_files.push(file);
    }
    let directory = Node::start(exe, &dir, "127.0.0.1:0", &[], &[], Policy::Normal)?;
    let workers = args.gateway_workers.to_string();
    let gateway = |data: &Path, member: &str| {
        Node::start(
            exe,
            data,
            "127.0.0.1:0",
            &["--role", "gateway"],
            &[
                ("CIVITAS_EXCHANGE__GATEWAY_MEMBER", member),
                ("CIVITAS_EXCHANGE__DIRECTORY_URL", &directory.url),
                ("CIVITAS_EXCHANGE__ANCHOR_KEY", &key),
                ("CIVITAS_EXCHANGE__GATEWAY_LISTEN", "127.0.0.1:0"),
                ("CIVITAS_EXCHANGE__POLL_SECS", "1"),
                ("CIVITAS_WORKERS", &workers),
            ],
            args.gateway_sched,
        )
    };
    let a = gateway(&ga, "TW/BENCH/CLIENT")?;
    let b = gateway(&gb, "TW/BENCH/PROVIDER")?;
    // The operator registers both gateways (the directory's SQLite has one writer, so it
    // stops meanwhile) and the directory comes back on its address.
    let listen = directory.url.trim_start_matches("http://").to_string();
    directory.stop();
    for (member, node, keys) in [
        ("TW/BENCH/CLIENT", &a, &key_files[0]),
        ("TW/BENCH/PROVIDER", &b, &key_files[1]),
    ] {
        let address = node
            .peers
            .clone()
            .context("a gateway without its address")?;
        let keys = keys.to_string_lossy().into_owned();
        civitas(
            exe,
            &dir,
            &[
                "exchange",
                "gateway",
                "add",
                member,
                "--address",
                &address,
                "--keys",
                &keys,
            ],
        )?;
    }
    let directory = Node::start(exe, &dir, &listen, &[], &[], Policy::Normal)?;
    let gateways = [
        ("client's gateway", a.child.id()),
        ("provider's gateway", b.child.id()),
    ];
    let result = measure(args, &gateways, &a.url, &url).await;
    for n in [a, b, directory] {
        n.stop();
    }
    result
}

async fn measure(
    args: &ExchangeArgs,
    gateways: &[(&str, u32)],
    base: &str,
    direct: &str,
) -> Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let through = format!("{base}/r1/TW/BENCH/PROVIDER/app/items");
    // Both gateways hold a configuration naming each other before the load starts.
    let waited = Instant::now();
    loop {
        let probe = client
            .get(format!("{through}/items/1"))
            .header("X-Road-Client", "TW/BENCH/CLIENT/app")
            .send()
            .await?;
        if probe.status().is_success() {
            break;
        }
        if waited.elapsed() > Duration::from_secs(30) {
            bail!(
                "the gateways answered {}: {}",
                probe.status(),
                probe.text().await?
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("direct and through the gateway:");
    let usage = || -> Vec<crate::bench::Usage> {
        gateways
            .iter()
            .map(|(_, pid)| crate::bench::process_usage(*pid))
            .collect()
    };
    let before_load = usage();
    let mut rss_under_load = vec![0u64; gateways.len()];
    args.load_sched.apply_to_process().with_context(|| {
        format!(
            "cannot run the clients as {} (`--load-sched normal` runs them without)",
            args.load_sched.name()
        )
    })?;
    let (direct_url, through_url) = (direct.to_string(), through.clone());
    let saturated = crate::bench::alternate(
        args.clients,
        args.secs,
        {
            let client = client.clone();
            move |n| client.get(format!("{direct_url}/items/{n}"))
        },
        {
            let client = client.clone();
            move |n| {
                client
                    .get(format!("{through_url}/items/{n}"))
                    .header("X-Road-Client", "TW/BENCH/CLIENT/app")
            }
        },
        || {
            for (i, (_, pid)) in gateways.iter().enumerate() {
                rss_under_load[i] = rss_under_load[i].max(rss_kib(*pid));
            }
        },
    )
    .await;
    let after_load = usage();
    Policy::Normal
        .apply_to_process()
        .context("cannot put the clients back to SCHED_OTHER")?;
    let ((d, direct_secs), (g, gateway_secs)) = saturated?;
    let spent = [direct_secs, gateway_secs];
    let (rate_d, rate_g) = (d.len() as f64 / spent[0], g.len() as f64 / spent[1]);
    let ms = |v: &[f64], p: f64| percentile(v, p) * 1e3;
    let rss: Vec<u64> = gateways.iter().map(|(_, pid)| rss_kib(*pid)).collect();
    let pids: Vec<u32> = gateways.iter().map(|(_, pid)| *pid).collect();

    // Latency at a fixed rate, on each path in turn.
    let fixed = if args.rate > 0 {
        let secs = (args.secs as f64 / 2.0).max(2.0);
        let direct_url = direct.to_string();
        let d = fixed_rate(args.rate, secs, |n| {
            client.get(format!("{direct_url}/items/{n}"))
        })
        .await?;
        let before = usage();
        let g = fixed_rate(args.rate, secs, |n| {
            client
                .get(format!("{through}/items/{n}"))
                .header("X-Road-Client", "TW/BENCH/CLIENT/app")
        })
        .await?;
        let used = usage();
        Some((d, g, before, used))
    } else {
        None
    };

    // One large body through both gateways, with their peak memory sampled as it passes.
    let big = if args.body_mib > 0 {
        Some(stream_body(&client, &through, &pids, args.body_mib).await?)
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
        "| GET through two gateways: checked, mutual TLS 1.3, signed, verified, logged by both ({} clients) | {rate_g:.0}/s | {:.2} ms | {:.2} ms | direct {rate_d:.0}/s | {:.3} | ≥ 5,000/s |",
        args.clients,
        ms(&g, 0.5),
        ms(&g, 0.99),
        rate_g / rate_d
    );
    println!(
        "| latency the two gateways add, {} clients calling as fast as answers come (the machine saturated: each call mostly waits its turn, {:.1} ms on average by Little's law) | | {:.2} ms | {:.2} ms | | | — (the target is read at a fixed rate, `--rate`) |",
        args.clients,
        args.clients as f64 * 1000.0 / rate_g,
        ms(&g, 0.5) - ms(&d, 0.5),
        ms(&g, 0.99) - ms(&d, 0.99)
    );
    print_costs(
        &format!(", {} clients", args.clients),
        &before_load,
        &after_load,
        g.len(),
    );
    if let Some((fd, fg, before, after)) = &fixed {
        print_costs(&format!(" at {}/s", args.rate), before, after, fg.len());
        let rate = args.rate;
        println!(
            "| GET, direct to the provider, {rate}/s offered | {:.0}/s answered | {:.2} ms | {:.2} ms | — | — | the baseline |",
            fd.len() as f64 / (args.secs as f64 / 2.0).max(2.0),
            ms(fd, 0.5),
            ms(fd, 0.99)
        );
        println!(
            "| GET through two gateways, {rate}/s offered | {:.0}/s answered | {:.2} ms | {:.2} ms | | | |",
            fg.len() as f64 / (args.secs as f64 / 2.0).max(2.0),
            ms(fg, 0.5),
            ms(fg, 0.99)
        );
        println!(
            "| latency the two gateways add at {rate}/s | | {:.2} ms | {:.2} ms | | | p99 ≤ 5 ms |",
            ms(fg, 0.5) - ms(fd, 0.5),
            ms(fg, 0.99) - ms(fd, 0.99)
        );
    }
    for (i, (name, _)) in gateways.iter().enumerate() {
        println!(
            "| {name} resident memory, under load / after | {:.1} MiB / {:.1} MiB | | | | | < 100 MB |",
            rss_under_load[i] as f64 / 1024.0,
            rss[i] as f64 / 1024.0
        );
    }
    if let Some((secs, before, peak)) = big {
        println!(
            "| {} MiB body streamed through both gateways | {secs:.1} s ({:.0} MiB/s) | | | | | flat memory |",
            args.body_mib,
            args.body_mib as f64 / secs
        );
        for (i, (name, _)) in gateways.iter().enumerate() {
            println!(
                "| {name} memory before / peak while streaming it | {:.1} MiB / {:.1} MiB | | | | | |",
                before[i] as f64 / 1024.0,
                peak[i] as f64 / 1024.0
            );
        }
    }
    Ok(())
}

/// Prints what each call cost the gateways (`when`: the load, as the rows name it), which the host's speed of the
/// moment moves less than the rates: CPU time and bytes sent to storage (the ledger's
/// commits and their checkpoints), per call through them.
fn print_costs(
    when: &str,
    before: &[crate::bench::Usage],
    after: &[crate::bench::Usage],
    calls: usize,
) {
    let each: Vec<(f64, f64)> = before
        .iter()
        .zip(after)
        .map(|(b, a)| a.per_call_since(b, calls))
        .collect();
    let row = |what: &str, figure: &dyn Fn(&(f64, f64)) -> String| {
        let figures: Vec<String> = each.iter().map(figure).collect();
        println!(
            "| each gateway's {what} per call{when} (client's / provider's) | {} | | | | | — |",
            figures.join(" / ")
        );
    };
    row("CPU time", &|(cpu, _)| format!("{cpu:.0} µs"));
    row("storage writes", &|(_, kib)| format!("{kib:.1} KiB"));
}

/// Calls `request(n)` `rate` times a second for `secs` seconds, each on its own schedule
/// (open loop), and returns every call's seconds from its scheduled start to its answer's
/// last byte, in order.
async fn fixed_rate(
    rate: u64,
    secs: f64,
    request: impl Fn(u64) -> reqwest::RequestBuilder,
) -> Result<Vec<f64>> {
    let total = (rate as f64 * secs) as u64;
    let start = tokio::time::Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..total {
        let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
        tokio::time::sleep_until(due).await;
        let sent = request(n).send();
        calls.spawn(async move {
            let ok = match sent.await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            ok.then(|| due.elapsed().as_secs_f64())
        });
    }
    let mut out = Vec::with_capacity(total as usize);
    while let Some(r) = calls.join_next().await {
        out.push(r?.context("a call at the fixed rate failed")?);
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// Posts `mib` MiB through the gateways, generated as it goes; returns the seconds it took
/// and each gateway's resident memory before and at its highest while the body passed.
async fn stream_body(
    client: &reqwest::Client,
    through: &str,
    pids: &[u32],
    mib: u64,
) -> Result<(f64, Vec<u64>, Vec<u64>)> {
    let before: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
    let peak: Arc<Vec<AtomicU64>> = Arc::new(before.iter().map(|b| AtomicU64::new(*b)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, pids) = (peak.clone(), done.clone(), pids.to_vec());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                for (i, pid) in pids.iter().enumerate() {
                    peak[i].fetch_max(rss_kib(*pid), Ordering::SeqCst);
                }
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
    Ok((
        secs,
        before,
        peak.iter().map(|p| p.load(Ordering::SeqCst)).collect(),
    ))
}
