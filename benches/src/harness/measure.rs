//! One repetition of one path: fresh namespaces, the shared servers, the proxy (restarted
//! for each phase so every phase starts from a fresh process), then the rows.

use std::path::Path;
use std::time::{Duration, Instant};

use test_support::Process;

use crate::harness::error::Error;
use crate::harness::idle;
use crate::harness::load;
use crate::harness::net::{HTTP_PORT, IPERF_PORT, Net};
use crate::harness::options::Plan;
use crate::harness::procstat::{
    group_cpu_secs, group_mem, machine_busy_secs, self_and_children_secs,
};
use crate::harness::proxies::{self, PathKind};
use crate::harness::results::{Kind, Results};

/// CPU of processes that are not part of the benchmark, in cores, above which a row is
/// reported as disturbed (benchmarking.md discards rows above ~5 %).
const NOISY_CORES: f64 = 0.05;

/// What one path-repetition needs to know.
pub struct Ctx<'a> {
    pub plan: &'a Plan,
    pub vm_proxy: &'a Path,
    pub workdir: &'a Path,
    pub rep: u32,
    /// Connections a proxy can hold under the open-file limit.
    pub max_conns: u32,
}

/// Measures `kind` once; failures of single rows are recorded in `out` and the other rows
/// still run. An error here means the path could not be set up at all.
pub fn path(ctx: &Ctx, kind: PathKind, out: &mut Results) -> Result<(), Error> {
    let dir = ctx.workdir.join(format!("rep{}-{}", ctx.rep, kind.name()));
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    proxies::open_for_proxy_user(&dir)?;
    let net = Net::build();
    let app = net.start_app(&dir)?;
    let iperf = net.start_iperf_server()?;
    if kind != PathKind::Direct {
        proxies::capture(net.client(), ctx.vm_proxy)?;
    }
    let servers = [app.pid(), iperf.pid()];
    let m = Measurer {
        ctx,
        kind,
        net: &net,
        dir: &dir,
        servers,
    };
    m.http_phase(out)?;
    m.bulk_phase(out)?;
    m.idle_phase(out)?;
    Ok(())
}

struct Measurer<'a> {
    ctx: &'a Ctx<'a>,
    kind: PathKind,
    net: &'a Net,
    dir: &'a Path,
    servers: [u32; 2],
}

impl Measurer<'_> {
    fn start_proxy(&self, port: u16) -> Result<Option<Process>, Error> {
        proxies::start(
            self.kind,
            self.net.client(),
            self.dir,
            self.ctx.vm_proxy,
            self.net.server().addr(port),
            self.ctx.max_conns,
        )
    }

    /// Fixed-rate latency rows with CPU per 1000 rps, then saturation, then memory.
    fn http_phase(&self, out: &mut Results) -> Result<(), Error> {
        let proxy = self.start_proxy(HTTP_PORT)?;
        let pg = proxy.as_ref().map(Process::pid);
        let url = self.net.url();
        let client = self.net.client();
        // Warm-up (not recorded): connections, caches and allocator pools of every process.
        if let Err(e) = load::wrk(client, &url, 4, 1) {
            self.fail(out, "warm-up", &e);
        }
        let mut steady_rss = Vec::new();
        for &(rate, conns) in &self.ctx.plan.latency_rows {
            let row = format!("latency r{rate} c{conns}");
            let log = self.dir.join(format!("h2load-r{rate}-c{conns}.tsv"));
            let w = self.window(pg);
            let lat = load::h2load(client, &url, rate, conns, self.ctx.plan.latency_secs, &log);
            let win = w.finish(self, out, &row);
            let lat = match lat {
                Ok(l) => l,
                Err(e) => {
                    self.fail(out, &row, &e);
                    continue;
                }
            };
            let id = format!("lat/r{rate}/c{conns}");
            let lbl = format!("{rate} rps, {conns} conns");
            for (name, v) in [
                ("p50", lat.p50),
                ("p90", lat.p90),
                ("p99", lat.p99),
                ("p99.9", lat.p999),
            ] {
                self.put(
                    out,
                    &format!("{id}/{name}"),
                    &format!("{lbl}: {name}"),
                    "µs",
                    Kind::Latency,
                    v,
                );
            }
            self.put(
                out,
                &format!("{id}/rps"),
                &format!("{lbl}: achieved"),
                "rps",
                Kind::Meta,
                lat.rps,
            );
            if lat.failed > 0 {
                self.fail_text(out, &row, format!("{} requests failed", lat.failed));
            }
            if let Some(pg) = pg {
                self.put(
                    out,
                    &format!("{id}/cpu"),
                    &format!("{lbl}: proxy vCPU per 1000 rps"),
                    "vCPU",
                    Kind::PerProxy,
                    win.proxy_cpu / win.wall / (lat.rps / 1000.0),
                );
                steady_rss.push(group_mem(pg).rss_kb as f64 / 1024.0);
            }
        }

        let conns = self.ctx.plan.saturation_conns;
        let row = format!("saturation c{conns}");
        let w = self.window(pg);
        let sat = load::wrk(client, &url, conns, self.ctx.plan.saturation_secs);
        let win = w.finish(self, out, &row);
        match sat {
            Ok((rps, errors)) => {
                let lbl = format!("saturation (wrk, {conns} conns)");
                self.put(
                    out,
                    "sat/rps",
                    &format!("{lbl}: rps"),
                    "rps",
                    Kind::Path,
                    rps,
                );
                if errors > 0 {
                    self.fail_text(out, &row, format!("{errors} requests failed"));
                }
                if let Some(pg) = pg {
                    let cores = win.proxy_cpu / win.wall;
                    self.put(
                        out,
                        "sat/cpu",
                        &format!("{lbl}: proxy vCPU per 1000 rps"),
                        "vCPU",
                        Kind::PerProxy,
                        cores / (rps / 1000.0),
                    );
                    self.put(
                        out,
                        "sat/per-core",
                        &format!("{lbl}: rps per proxy core"),
                        "rps",
                        Kind::PerProxy,
                        rps / cores,
                    );
                    steady_rss.push(group_mem(pg).rss_kb as f64 / 1024.0);
                }
            }
            Err(e) => self.fail(out, &row, &e),
        }
        if let Some(pg) = pg {
            steady_rss.sort_by(f64::total_cmp);
            if let Some(m) = steady_rss.get(steady_rss.len() / 2) {
                self.put(
                    out,
                    "rss/steady",
                    "RSS under load (median of rows)",
                    "MB",
                    Kind::PerProxy,
                    *m,
                );
            }
            self.put(
                out,
                "rss/max",
                "RSS max (VmHWM) over the HTTP rows",
                "MB",
                Kind::PerProxy,
                group_mem(pg).hwm_kb as f64 / 1024.0,
            );
        }
        Ok(())
    }

    /// iperf3 through the proxy: Gbit/s and the proxy's CPU.
    fn bulk_phase(&self, out: &mut Results) -> Result<(), Error> {
        let proxy = self.start_proxy(IPERF_PORT)?;
        let pg = proxy.as_ref().map(Process::pid);
        let server = self.net.server().ipv4().to_string();
        for &streams in &self.ctx.plan.iperf_streams {
            let row = format!("iperf3 P{streams}");
            let w = self.window(pg);
            let r = load::iperf3(
                self.net.client(),
                &server,
                IPERF_PORT,
                streams,
                self.ctx.plan.iperf_secs,
            );
            let win = w.finish(self, out, &row);
            match r {
                Ok(gbps) => {
                    let lbl = format!(
                        "TCP bulk, {streams} stream{}",
                        if streams == 1 { "" } else { "s" }
                    );
                    self.put(
                        out,
                        &format!("bulk/P{streams}"),
                        &format!("{lbl}: throughput"),
                        "Gbit/s",
                        Kind::Path,
                        gbps,
                    );
                    if pg.is_some() {
                        self.put(
                            out,
                            &format!("bulk/P{streams}/cpu"),
                            &format!("{lbl}: proxy vCPU per Gbit/s"),
                            "vCPU",
                            Kind::PerProxy,
                            win.proxy_cpu / win.wall / gbps,
                        );
                    }
                }
                Err(e) => self.fail(out, &row, &e),
            }
        }
        Ok(())
    }

    /// N idle keep-alive connections through a fresh proxy: RSS growth per connection.
    fn idle_phase(&self, out: &mut Results) -> Result<(), Error> {
        let Some(proxy) = self.start_proxy(HTTP_PORT)? else {
            return Ok(());
        };
        let pg = proxy.pid();
        let n = self.ctx.plan.idle_conns;
        let row = format!("idle {n}");
        let before = group_mem(pg);
        match idle::open(self.net.client(), self.net.server().addr(HTTP_PORT), n) {
            Ok(conns) => {
                // Let the proxy settle (buffers released after the one response).
                std::thread::sleep(Duration::from_millis(500));
                let after = group_mem(pg);
                let grown = after.rss_kb.saturating_sub(before.rss_kb) as f64;
                self.put(
                    out,
                    "idle/rss0",
                    "RSS idle, fresh process",
                    "MB",
                    Kind::PerProxy,
                    before.rss_kb as f64 / 1024.0,
                );
                self.put(
                    out,
                    "idle/rss",
                    &format!("RSS with {n} idle connections"),
                    "MB",
                    Kind::PerProxy,
                    after.rss_kb as f64 / 1024.0,
                );
                self.put(
                    out,
                    "idle/per-conn",
                    "RSS per idle connection",
                    "KiB",
                    Kind::PerProxy,
                    grown / f64::from(n),
                );
                drop(conns);
            }
            Err(e) => self.fail(out, &row, &e),
        }
        Ok(())
    }

    fn put(
        &self,
        out: &mut Results,
        id: &str,
        label: &str,
        unit: &'static str,
        kind: Kind,
        v: f64,
    ) {
        out.put(id, label, unit, kind, self.kind, v);
    }

    fn fail(&self, out: &mut Results, row: &str, e: &Error) {
        self.fail_text(out, row, e.to_string());
    }

    fn fail_text(&self, out: &mut Results, row: &str, text: String) {
        out.error(self.kind, self.ctx.rep, row, text);
    }

    fn window(&self, proxy: Option<u32>) -> Window {
        Window {
            t0: Instant::now(),
            busy0: machine_busy_secs(),
            proxy,
            proxy0: proxy.map_or(0.0, group_cpu_secs),
            ours0: self.ours(),
        }
    }

    /// CPU used by every process of the benchmark except the proxy: the servers, the
    /// harness itself and the load generators it has waited for.
    fn ours(&self) -> f64 {
        self.servers.iter().map(|p| group_cpu_secs(*p)).sum::<f64>() + self_and_children_secs()
    }
}

/// CPU accounting around one row.
struct Window {
    t0: Instant,
    busy0: f64,
    proxy: Option<u32>,
    proxy0: f64,
    ours0: f64,
}

struct Used {
    wall: f64,
    /// CPU seconds of the proxy's processes during the row.
    proxy_cpu: f64,
}

impl Window {
    /// Ends the row; records, as a note, a row during which other processes used more than
    /// [`NOISY_CORES`].
    fn finish(self, m: &Measurer, out: &mut Results, row: &str) -> Used {
        let wall = self.t0.elapsed().as_secs_f64();
        let proxy_cpu = self.proxy.map_or(0.0, group_cpu_secs) - self.proxy0;
        let ours = m.ours() - self.ours0 + proxy_cpu;
        let other = ((machine_busy_secs() - self.busy0 - ours) / wall).max(0.0);
        m.put(
            out,
            "meta/other-cpu",
            "other processes' CPU during rows (median)",
            "cores",
            Kind::Meta,
            other,
        );
        if other > NOISY_CORES {
            out.noisy.push(crate::harness::results::Note {
                path: m.kind,
                rep: m.ctx.rep,
                row: row.to_string(),
                text: format!("other processes used {other:.2} cores"),
            });
        }
        Used { wall, proxy_cpu }
    }
}
