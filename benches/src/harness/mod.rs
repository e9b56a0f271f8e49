//! The benchmark harness behind `harness`: see benches/README.md for the method.

pub mod cleanup;
pub mod error;
pub mod idle;
pub mod load;
pub mod measure;
pub mod net;
pub mod options;
pub mod pending;
pub mod procstat;
pub mod proxies;
pub mod report;
pub mod results;
pub mod setup;

use std::process::ExitCode;

use error::Error;
use options::Options;
use proxies::PathKind;
use results::Results;

/// Runs the harness; the exit code is non-zero when setup failed, a row failed or a row
/// produced no figure.
pub fn main(opts: Options) -> Result<ExitCode, Error> {
    cleanup::cleanup_on_signals()?;
    setup::require_root()?;
    if opts.clean {
        let removed = cleanup::clean_all();
        if removed.is_empty() {
            println!("nothing to clean");
        }
        for r in removed {
            println!("removed {r}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    setup::require_tools()?;
    cleanup::refuse_leftovers()?;
    let max_conns = setup::raise_nofile()?;
    let vm_proxy = setup::vm_proxy_binary(opts.vm_proxy.as_deref())?;
    let mut plan = opts.plan();
    if plan.idle_conns > max_conns {
        eprintln!(
            "harness: the open-file limit allows {max_conns} connections through a proxy, \
             not {}: the idle-connection row uses {max_conns}",
            plan.idle_conns
        );
        plan.idle_conns = max_conns;
    }
    let json_path = opts.json.clone().unwrap_or_else(setup::default_json);
    let facts = setup::run_facts(plan.name, &vm_proxy);

    let workdir = cleanup::workdir();
    std::fs::create_dir_all(&workdir).map_err(Error::io(&workdir))?;
    proxies::open_for_proxy_user(&workdir)?;
    eprintln!(
        "harness: {} mode, about {} s; load average {}",
        plan.name,
        plan.estimate_secs(PathKind::ALL.len() as u32),
        setup::loadavg()
    );

    let mut results = Results::default();
    for rep in 0..plan.reps {
        for kind in PathKind::ALL {
            eprintln!(
                "harness: repetition {} of {}: {}",
                rep + 1,
                plan.reps,
                kind.name()
            );
            let ctx = measure::Ctx {
                plan: &plan,
                vm_proxy: &vm_proxy,
                workdir: &workdir,
                rep,
                max_conns,
            };
            if let Err(e) = measure::path(&ctx, kind, &mut results) {
                results.error(kind, rep, "setup", e.to_string());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&workdir);

    let mut facts = facts;
    facts["loadavg_at_end"] = serde_json::Value::String(setup::loadavg());
    print!("{}", report::table(&results));
    report::write_json(&json_path, &report::json(&results, facts))?;
    println!("\nJSON: {}", json_path.display());

    let missing = results.missing(&PathKind::ALL);
    if !missing.is_empty() {
        eprintln!("harness: rows without a figure: {}", missing.join(", "));
    }
    let left = cleanup::leftovers();
    if !left.is_empty() {
        eprintln!("harness: left behind: {}", left.join(", "));
    }
    Ok(
        if missing.is_empty() && results.errors.is_empty() && left.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}
