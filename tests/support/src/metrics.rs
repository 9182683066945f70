//! Reading Prometheus text (the `/metrics` of mesh-admission and of kube-apiserver).

/// The value of the series `series`, written as it appears (`name` or `name{labels}`); 0 when
/// absent, as a counter is until its first increment.
pub fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0.0)
}

/// The sum of every series of the metric `name`, whatever its labels (0 when there is none).
pub fn sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = if rest.starts_with('{') {
                &rest[rest.rfind('}')? + 1..]
            } else if rest.starts_with(' ') {
                rest
            } else {
                return None; // another metric whose name starts with `name`
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}
