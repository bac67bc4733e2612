//! The one table a run prints: each peer's throughput and latency, and its ratios to the
//! fastest durable peer (the fastest of the PostgreSQL-backed frameworks, not Annals).

use std::fmt::Write as _;

use crate::workload::Measured;

/// What the table says about one system.
#[derive(Debug)]
pub(crate) struct Row {
    /// Name and version.
    pub(crate) peer: String,
    /// When a reply is sent, in a few words.
    pub(crate) acknowledged: String,
    /// Whether an acknowledged command survives a crash of the machine.
    pub(crate) durable: bool,
    /// Whether this row is a peer (a candidate for "fastest durable peer"), not Annals.
    pub(crate) is_peer: bool,
    /// The timed window.
    pub(crate) measured: Measured,
    /// Events committed per fsync in the timed window, where it could be counted.
    pub(crate) events_per_fsync: Option<f64>,
}

fn ms(us: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // microseconds far below 2^52
    let ms = us as f64 / 1000.0;
    format!("{ms:.2}")
}

/// Renders the table.
pub(crate) fn table(rows: &[Row]) -> String {
    let best = rows
        .iter()
        .filter(|r| r.is_peer && r.durable)
        .max_by(|a, b| a.measured.rate().total_cmp(&b.measured.rate()));
    let mut out = String::new();
    let header = [
        "system",
        "reply after",
        "commands",
        "rejected",
        "commands/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "events/fsync",
        "× rate",
        "× p99",
    ];
    let mut lines = vec![header.map(str::to_string).to_vec()];
    for r in rows {
        let m = &r.measured;
        let p99 = m.latency_us.value_at_quantile(0.99);
        let (rate_ratio, p99_ratio) = match best {
            Some(b) => {
                let b_p99 = b.measured.latency_us.value_at_quantile(0.99);
                #[allow(clippy::cast_precision_loss)] // microseconds far below 2^52
                let p99_ratio = b_p99 as f64 / p99.max(1) as f64;
                (
                    format!("{:.2}", m.rate() / b.measured.rate()),
                    format!("{p99_ratio:.2}"),
                )
            }
            None => ("—".to_string(), "—".to_string()),
        };
        lines.push(vec![
            r.peer.clone(),
            r.acknowledged.clone(),
            m.commands.to_string(),
            m.rejected.to_string(),
            format!("{:.0}", m.rate()),
            ms(m.latency_us.value_at_quantile(0.5)),
            ms(p99),
            ms(m.latency_us.max()),
            r.events_per_fsync
                .map_or_else(|| "—".to_string(), |e| format!("{e:.1}")),
            rate_ratio,
            p99_ratio,
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (i, line) in lines.iter().enumerate() {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            // Text columns left-aligned, numbers right-aligned.
            if c < 2 {
                let _ = write!(text, "{cell}{}  ", " ".repeat(pad));
            } else {
                let _ = write!(text, "{}{cell}  ", " ".repeat(pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
            out.push('\n');
        }
    }
    match best {
        Some(b) => {
            let _ = writeln!(
                out,
                "× rate = commands/s ÷ {}'s; × p99 = {}'s p99 ÷ this p99 (above 1: lower latency).",
                b.peer, b.peer
            );
        }
        None => out.push_str("no durable peer ran, so no ratios.\n"),
    }
    out
}
