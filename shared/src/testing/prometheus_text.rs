//! Reading back the Prometheus text a recorder rendered (`/metrics`): the
//! one parser for the workers' report, the main job's lag figures, the
//! benchmarks and the tests.

/// One sample line: `name{label="value",…} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// Label names and values, in the order written.
    pub labels: Vec<(&'a str, String)>,
    /// The sample's value (`+Inf`, `-Inf` and `NaN` included).
    pub value: f64,
}

impl Sample<'_> {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(label, _)| *label == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The samples of metric `name` exactly (not of other metrics it is a
/// prefix of: `…_bucket`, `…_sum` and `…_count` are metrics of their own
/// here) in `rendered`, skipping comments and lines it cannot read.
pub fn samples<'a>(rendered: &'a str, name: &'a str) -> impl Iterator<Item = Sample<'a>> + 'a {
    rendered.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(labelled) => {
                let (labels, after) = read_labels(labelled)?;
                (labels, after)
            }
            None => (Vec::new(), rest),
        };
        let value = value.strip_prefix(' ')?.split(' ').next()?;
        Some(Sample {
            labels,
            value: value.parse().ok()?,
        })
    })
}

/// The sum of the values of `name`'s samples that carry every one of
/// `labels` (name, value).
pub fn sum(rendered: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(rendered, name)
        .filter(|sample| {
            labels
                .iter()
                .all(|(label, value)| sample.label(label) == Some(*value))
        })
        .map(|sample| sample.value)
        .sum()
}

/// Reads `label="value",…}` and returns the labels and what follows `}`.
fn read_labels(mut text: &str) -> Option<(Vec<(&str, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let (name, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut characters = rest.char_indices();
        let end = loop {
            match characters.next()? {
                (index, '"') => break index,
                (_, '\\') => match characters.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, other) => value.push(other),
            }
        };
        labels.push((name, value));
        text = &rest[end + 1..];
        text = text.strip_prefix(',').unwrap_or(text);
    }
}

#[cfg(test)]
mod tests {
    use super::{samples, sum};

    const RENDERED: &str = "\
# TYPE switchyard_events_total counter
switchyard_events_total{group=\"orders\",outcome=\"applied\"} 12
switchyard_events_total{group=\"sales\",outcome=\"applied\"} 3
switchyard_events_total{group=\"orders\",outcome=\"retried\"} 1
switchyard_events_total_other 99
switchyard_lag_seconds_bucket{group=\"orders\",le=\"0.005\"} 4
switchyard_lag_seconds_bucket{group=\"orders\",le=\"+Inf\"} 9
switchyard_sampled_timestamp_seconds 1796531154.72
odd{note=\"a \\\"quoted\\\" word, and a comma\"} 1
";

    #[test]
    fn samples_are_read_by_exact_name_with_their_labels() {
        let events: Vec<_> = samples(RENDERED, "switchyard_events_total").collect();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].label("group"), Some("orders"));
        assert_eq!(events[0].label("outcome"), Some("applied"));
        assert_eq!(events[0].value, 12.0);
        assert_eq!(
            sum(
                RENDERED,
                "switchyard_events_total",
                &[("outcome", "applied")]
            ),
            15.0
        );
        assert_eq!(
            sum(RENDERED, "switchyard_sampled_timestamp_seconds", &[]),
            1_796_531_154.72
        );
        let buckets: Vec<_> = samples(RENDERED, "switchyard_lag_seconds_bucket").collect();
        assert_eq!(buckets[1].label("le"), Some("+Inf"));
        assert_eq!(buckets[1].value, 9.0);
        let odd: Vec<_> = samples(RENDERED, "odd").collect();
        assert_eq!(odd[0].label("note"), Some("a \"quoted\" word, and a comma"));
        assert_eq!(samples(RENDERED, "absent").count(), 0);
    }
}
