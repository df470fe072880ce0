//! Which exposition format a scraper gets, and the classic text format
//! (0.0.4) made from prometheus-client's OpenMetrics output.
//!
//! The two differ only in framing: OpenMetrics names a counter family
//! without `_total` (its samples carry it), has an `info` type, `# UNIT`
//! lines and a closing `# EOF`. Samples are written the same way in both.

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: what curl, promtool and older
    /// scrapers read.
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format an `Accept` header prefers: OpenMetrics only when it
    /// is asked for with a higher (or equal) quality than text; text
    /// otherwise, and without a header.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let (mut open, mut text) = (None::<f32>, None::<f32>);
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, v)| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let slot = match media.as_str() {
                "application/openmetrics-text" => &mut open,
                "text/plain" | "text/*" | "*/*" => &mut text,
                _ => continue,
            };
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
        match (open, text) {
            (Some(o), Some(t)) if o > 0.0 && o >= t => Format::OpenMetrics,
            (Some(o), None) if o > 0.0 => Format::OpenMetrics,
            _ => Format::Text,
        }
    }
}

/// OpenMetrics text as the classic Prometheus text format.
pub fn to_classic_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // HELP comes before TYPE; the family's classic name is known at TYPE.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, ty) = match ty {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gaugehistogram" => (name.to_string(), "histogram"),
                "stateset" => (name.to_string(), "gauge"),
                "unknown" => (name.to_string(), "untyped"),
                other => (name.to_string(), other),
            };
            if let Some((_, text)) = help.take() {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {ty}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_unless_openmetrics_is_preferred() {
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
        // What Prometheus sends.
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0.2, text/plain")),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::Text
        );
    }

    #[test]
    fn counters_and_infos_get_their_classic_names() {
        let om = "# HELP mend_reloads Reloads.\n# TYPE mend_reloads counter\n\
                  mend_reloads_total{kind=\"config\"} 1\n\
                  # HELP mend_build The build.\n# TYPE mend_build info\n\
                  mend_build_info{version=\"0.1.0\"} 1\n\
                  # HELP x_seconds X.\n# TYPE x_seconds histogram\n# UNIT x_seconds seconds\n\
                  x_seconds_sum 0.5\n# EOF\n";
        assert_eq!(
            to_classic_text(om),
            "# HELP mend_reloads_total Reloads.\n# TYPE mend_reloads_total counter\n\
             mend_reloads_total{kind=\"config\"} 1\n\
             # HELP mend_build_info The build.\n# TYPE mend_build_info gauge\n\
             mend_build_info{version=\"0.1.0\"} 1\n\
             # HELP x_seconds X.\n# TYPE x_seconds histogram\nx_seconds_sum 0.5\n"
        );
    }
}
