//! What the fuzz targets share: the text form their inputs take.
//!
//! Inputs are header blocks, one `name: value` per line, so seed files are readable and
//! libFuzzer's mutations stay close to what a gateway forwards. Lines without a `:` are
//! skipped; names are matched case-insensitively; values are trimmed like HTTP's.

/// `(name, value)` pairs of a header block, in order; the name is lower-cased.
pub fn header_lines(text: &str) -> Vec<(String, &str)> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim()))
        .collect()
}

/// Every value of header `name`, in order.
pub fn values<'a>(lines: &[(String, &'a str)], name: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .collect()
}
