//! Prints the synthetic mesh of the `graph` benchmark as a YAML stream (`hack/bench-graph.sh` feeds
//! it to `mesh-admission graph` and to nca). Usage: `graph_input [NAMESPACES] [PER_NAMESPACE]`
//! (default 50 and 10: 500 workloads, 1,000 NetworkPolicies, 1,000 AuthorizationPolicies).

#[path = "../benches/graph/input.rs"]
mod input;

use std::io::Write;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let namespaces: usize = args.next().map_or(Ok(50), |a| a.parse())?;
    let per_namespace: usize = args.next().map_or(Ok(10), |a| a.parse())?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for object in input::objects(namespaces, per_namespace) {
        writeln!(out, "---")?;
        write!(out, "{}", yaml_serde::to_string(&object)?)?;
    }
    out.flush()?;
    Ok(())
}
