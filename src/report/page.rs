//! The page of `zerobias report`: the Wilcoxon rows of tests.csv, the headline sentences
//! they support, and a self-contained HTML page (inline CSS, no scripts, relative links to
//! its PNGs).

use crate::error::{Error, Result};

/// One row of tests.csv.
#[derive(Clone, Debug, PartialEq)]
pub struct TestRow {
    pub metric: String,
    /// `model:method` of each side.
    pub a: String,
    pub b: String,
    pub n: usize,
    /// None where the test could not be run (no pairs, all differences zero).
    pub p_value: Option<f64>,
    pub log10_p: Option<f64>,
    /// Median of a − b.
    pub median_diff: Option<f64>,
    pub p_method: String,
}

impl TestRow {
    pub fn side(s: &str) -> (&str, &str) {
        s.split_once(':').unwrap_or(("", s))
    }
    /// The same test with its sides swapped (the median difference changes sign).
    pub fn flipped(&self) -> TestRow {
        TestRow {
            a: self.b.clone(),
            b: self.a.clone(),
            median_diff: self.median_diff.map(|d| -d),
            ..self.clone()
        }
    }
    /// log10 p, from the column (exact for p below f64's range) or from p.
    pub fn log10(&self) -> Option<f64> {
        self.log10_p
            .or_else(|| self.p_value.filter(|p| *p > 0.0).map(f64::log10))
    }
}

/// Parse tests.csv as `eval::tables::tests_csv` writes it.
pub fn parse_tests(csv: &str) -> Result<Vec<TestRow>> {
    let mut lines = csv.lines();
    let header = lines.next().unwrap_or_default();
    let want = "metric,a,b,n,statistic,p_value,log10_p,median_diff,n_nonzero,p_method";
    if header != want {
        return Err(Error::input(format!(
            "tests.csv: header '{header}', expected '{want}'"
        )));
    }
    let opt = |s: &str, what: &str, line: usize| -> Result<Option<f64>> {
        if s.is_empty() {
            return Ok(None);
        }
        let v: f64 = s.parse().map_err(|_| {
            Error::input(format!(
                "tests.csv line {line}: {what} '{s}' is not a number"
            ))
        })?;
        if !v.is_finite() {
            return Err(Error::input(format!(
                "tests.csv line {line}: {what} is {v}, expected a finite number"
            )));
        }
        Ok(Some(v))
    };
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        let k = i + 2;
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 10 {
            return Err(Error::input(format!(
                "tests.csv line {k}: {} fields, expected 10",
                f.len()
            )));
        }
        rows.push(TestRow {
            metric: f[0].into(),
            a: f[1].into(),
            b: f[2].into(),
            n: f[3].parse().map_err(|_| {
                Error::input(format!("tests.csv line {k}: n '{}' is not a count", f[3]))
            })?,
            p_value: opt(f[5], "p_value", k)?,
            log10_p: opt(f[6], "log10_p", k)?,
            median_diff: opt(f[7], "median_diff", k)?,
            p_method: f[9].into(),
        });
    }
    Ok(rows)
}

/// Whether a larger value of the metric means a better saliency map: e− and δe− grow for
/// better maps, e+ and δe+ shrink (removing the most important pixels first flips sooner).
pub fn higher_is_better(metric: &str) -> bool {
    !matches!(metric, "e_plus" | "delta_e_plus")
}

/// What one test supports at significance level `alpha`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Side a is significantly better.
    A,
    /// Side b is significantly better.
    B,
    /// No claim: p ≥ alpha, no test, or a zero median difference.
    None,
}

pub fn verdict(t: &TestRow, alpha: f64) -> Verdict {
    let (Some(p), Some(d)) = (t.p_value, t.median_diff) else {
        return Verdict::None;
    };
    if p >= alpha || d == 0.0 {
        return Verdict::None;
    }
    if (d > 0.0) == higher_is_better(&t.metric) {
        Verdict::A
    } else {
        Verdict::B
    }
}

/// "1–3, 5, 7–9" for sorted layer indices.
pub fn ranges(ls: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ls.len() {
        let mut j = i;
        while j + 1 < ls.len() && ls[j + 1] == ls[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            ls[i].to_string()
        } else {
            format!("{}–{}", ls[i], ls[j])
        });
        i = j + 1;
    }
    parts.join(", ")
}

/// A bound "p < 1e-k" that holds for every test in `ts` (all below `alpha`).
fn p_bound(ts: &[&TestRow], alpha: f64) -> String {
    let worst = ts
        .iter()
        .filter_map(|t| t.log10())
        .fold(f64::NEG_INFINITY, f64::max);
    // The largest k with p < 10^-k for the worst p (strict, so p = 1e-8 gives 1e-7).
    let k = (-worst).ceil() - 1.0;
    if worst.is_finite() && k >= 1.0 && 10f64.powf(-k) <= alpha {
        format!("p < 1e-{k}")
    } else {
        format!("p < {alpha:.2e}")
    }
}

/// One family of per-layer comparisons: at each layer, the tests of side a against side b
/// (several when a layer has several bias modules; a side wins a layer only when it wins
/// all of them).
pub struct LayerFamily {
    /// "vanilla, δe−:", say.
    pub context: String,
    pub a_name: String,
    pub b_name: String,
    /// Tests oriented so that side a is `a_name` (see [`TestRow::flipped`]).
    pub layers: Vec<(usize, Vec<TestRow>)>,
}

/// The sentences a family supports at level `alpha`: who beats whom at which layers, and
/// where no difference is significant. Never claims a layer whose tests are not all
/// significant in the same direction.
pub fn family_sentences(f: &LayerFamily, alpha: f64) -> Vec<String> {
    let (mut a_wins, mut b_wins, mut none) = (Vec::new(), Vec::new(), Vec::new());
    let (mut a_tests, mut b_tests) = (Vec::new(), Vec::new());
    for (l, ts) in &f.layers {
        if ts.is_empty() {
            continue;
        }
        let v: Vec<Verdict> = ts.iter().map(|t| verdict(t, alpha)).collect();
        if v.iter().all(|x| *x == Verdict::A) {
            a_wins.push(*l);
            a_tests.extend(ts.iter());
        } else if v.iter().all(|x| *x == Verdict::B) {
            b_wins.push(*l);
            b_tests.extend(ts.iter());
        } else {
            none.push(*l);
        }
    }
    let mut out = Vec::new();
    let plural = |ls: &[usize]| if ls.len() == 1 { "layer" } else { "layers" };
    if !a_wins.is_empty() {
        out.push(format!(
            "{} {} beats {} at {} {} ({} each).",
            f.context,
            f.a_name,
            f.b_name,
            plural(&a_wins),
            ranges(&a_wins),
            p_bound(&a_tests, alpha)
        ));
    }
    if !b_wins.is_empty() {
        out.push(format!(
            "{} {} beats {} at {} {} ({} each).",
            f.context,
            f.b_name,
            f.a_name,
            plural(&b_wins),
            ranges(&b_wins),
            p_bound(&b_tests, alpha)
        ));
    }
    if !none.is_empty() {
        out.push(format!(
            "{} no significant difference between {} and {} at {} {}.",
            f.context,
            f.a_name,
            f.b_name,
            plural(&none),
            ranges(&none)
        ));
    }
    out
}

/// The sentence one test supports at level `alpha`, sides named by their methods:
/// "{context} agg.1 beats agg.0 (p < 1e-5)." or "no significant difference".
pub fn pair_sentence(context: &str, t: &TestRow, alpha: f64) -> String {
    let (a, b) = (TestRow::side(&t.a).1, TestRow::side(&t.b).1);
    match verdict(t, alpha) {
        Verdict::A => format!("{context} {a} beats {b} ({}).", p_bound(&[t], alpha)),
        Verdict::B => format!("{context} {b} beats {a} ({}).", p_bound(&[t], alpha)),
        Verdict::None => {
            format!("{context} no significant difference between {a} and {b}.")
        }
    }
}

/// The current UTC time as "YYYY-MM-DD HH:MM".
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    utc_date(secs)
}

/// Seconds since the epoch as "YYYY-MM-DD HH:MM" (UTC; the civil-from-days algorithm).
pub fn utc_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// HTML text escaping.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A figure of the page: a PNG relative to the page's folder.
pub struct Figure {
    pub src: String,
    pub caption: String,
}

/// One of the paper's figures: what was drawn, or why it could not be.
pub struct Section {
    pub title: String,
    pub caption: String,
    pub figures: Vec<Figure>,
    /// Said on the page when a figure (or part of one) cannot be drawn.
    pub missing: Vec<String>,
}

/// A Wilcoxon table of the page.
pub struct Table {
    pub title: String,
    pub rows: Vec<TestRow>,
}

pub struct Page {
    pub title: String,
    pub settings: Vec<(String, String)>,
    pub significance: String,
    pub headlines: Vec<String>,
    pub sections: Vec<Section>,
    pub tables: Vec<Table>,
    /// Relative links to the full tables.
    pub files: Vec<String>,
}

const CSS: &str = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}\
th{background:#eee}td:first-child,td:nth-child(2),td:nth-child(3){text-align:left}\
figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}figcaption{font-size:0.9em;color:#555}\
.missing{color:#a33}";

fn num(v: Option<f64>, sci: bool) -> String {
    match v {
        None => "–".into(),
        Some(x) if sci => format!("{x:.3e}"),
        Some(x) => format!("{x:.4}"),
    }
}

/// The page as HTML: no scripts, no external resources.
pub fn render(p: &Page) -> String {
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str(&format!(
        "<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&p.title),
        escape(&p.title)
    ));
    h.push_str("<h2>Settings</h2>\n<table>\n");
    for (k, v) in &p.settings {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td></tr>\n",
            escape(k),
            escape(v)
        ));
    }
    h.push_str("</table>\n<h2>Headline comparisons</h2>\n");
    h.push_str(&format!("<p>{}</p>\n<ul>\n", escape(&p.significance)));
    for s in &p.headlines {
        h.push_str(&format!("<li>{}</li>\n", escape(s)));
    }
    h.push_str("</ul>\n");
    for s in &p.sections {
        h.push_str(&format!(
            "<h2>{}</h2>\n<p>{}</p>\n",
            escape(&s.title),
            escape(&s.caption)
        ));
        for m in &s.missing {
            h.push_str(&format!("<p class=\"missing\">{}</p>\n", escape(m)));
        }
        for f in &s.figures {
            h.push_str(&format!(
                "<figure><img src=\"{}\" alt=\"{}\"><figcaption>{}</figcaption></figure>\n",
                escape(&f.src),
                escape(&f.caption),
                escape(&f.caption)
            ));
        }
    }
    h.push_str("<h2>Wilcoxon signed-rank tests</h2>\n");
    for t in &p.tables {
        h.push_str(&format!("<h3>{}</h3>\n", escape(&t.title)));
        if t.rows.is_empty() {
            h.push_str("<p class=\"missing\">No tests of this kind in this run.</p>\n");
            continue;
        }
        h.push_str("<table>\n<tr><th>metric</th><th>a</th><th>b</th><th>n</th><th>median(a−b)</th><th>p</th><th>log10 p</th><th>method</th></tr>\n");
        for r in &t.rows {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&r.metric),
                escape(&r.a),
                escape(&r.b),
                r.n,
                num(r.median_diff, false),
                num(r.p_value, true),
                num(r.log10(), false),
                escape(&r.p_method)
            ));
        }
        h.push_str("</table>\n");
    }
    h.push_str("<h2>Tables</h2>\n<ul>\n");
    for f in &p.files {
        h.push_str(&format!(
            "<li><a href=\"{}\">{}</a></li>\n",
            escape(f),
            escape(f)
        ));
    }
    h.push_str("</ul>\n</body>\n</html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(metric: &str, p: Option<f64>, d: f64) -> TestRow {
        TestRow {
            metric: metric.into(),
            a: "m:act.1".into(),
            b: "m:bias.x".into(),
            n: 100,
            p_value: p,
            log10_p: p.map(f64::log10),
            median_diff: Some(d),
            p_method: "normal".into(),
        }
    }

    #[test]
    fn verdicts_follow_p_and_the_metric_direction() {
        assert_eq!(
            verdict(&row("delta_e_minus", Some(1e-6), 0.1), 0.05),
            Verdict::A
        );
        assert_eq!(
            verdict(&row("delta_e_minus", Some(1e-6), -0.1), 0.05),
            Verdict::B
        );
        // e+: smaller is better, so a positive a − b favours b.
        assert_eq!(verdict(&row("e_plus", Some(1e-6), 0.1), 0.05), Verdict::B);
        assert_eq!(
            verdict(&row("e_minus", Some(0.2), 0.1), 0.05),
            Verdict::None
        );
        assert_eq!(
            verdict(&row("e_minus", Some(0.05), 0.1), 0.05),
            Verdict::None
        );
        assert_eq!(verdict(&row("e_minus", None, 0.1), 0.05), Verdict::None);
        assert_eq!(
            verdict(&row("e_minus", Some(1e-9), 0.0), 0.05),
            Verdict::None
        );
    }

    #[test]
    fn sentences_claim_only_significant_layers() {
        let sig = row("delta_e_minus", Some(3e-7), 0.2);
        let sig2 = row("delta_e_minus", Some(2e-5), 0.1);
        let weak = row("delta_e_minus", Some(0.01), 0.3);
        let against = row("delta_e_minus", Some(1e-8), -0.3);
        let fam = LayerFamily {
            context: "m, delta_e_minus:".into(),
            a_name: "act".into(),
            b_name: "bias".into(),
            layers: vec![
                (1, vec![sig.clone()]),
                (2, vec![sig2]),
                (3, vec![weak]),
                (4, vec![sig.clone(), against.clone()]),
                (5, vec![against.clone()]),
            ],
        };
        // At alpha = 0.005 the p = 0.01 of layer 3 is no claim; layer 4 is split.
        let s = family_sentences(&fam, 0.005);
        assert_eq!(
            s,
            [
                "m, delta_e_minus: act beats bias at layers 1–2 (p < 1e-4 each).",
                "m, delta_e_minus: bias beats act at layer 5 (p < 1e-7 each).",
                "m, delta_e_minus: no significant difference between act and bias at layers 3–4."
            ]
        );
        // Swapping the sides of a test swaps the claim.
        let swapped = LayerFamily {
            context: "m:".into(),
            a_name: "act".into(),
            b_name: "bias".into(),
            layers: vec![
                (1, vec![sig.flipped().flipped()]),
                (2, vec![against.flipped()]),
            ],
        };
        assert_eq!(
            family_sentences(&swapped, 0.05),
            ["m: act beats bias at layers 1–2 (p < 1e-6 each)."]
        );
        // Nothing significant: no "beats" at all.
        let s = family_sentences(&fam, 1e-12);
        assert!(s.iter().all(|x| !x.contains("beats")), "{s:?}");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn pair_sentences() {
        let mut t = row("delta_e_minus", Some(2e-6), 0.1);
        t.a = "v:agg.1".into();
        t.b = "v:agg.0".into();
        assert_eq!(
            pair_sentence("v, delta_e_minus:", &t, 1e-3),
            "v, delta_e_minus: agg.1 beats agg.0 (p < 1e-5)."
        );
        assert_eq!(
            pair_sentence("v:", &t.flipped(), 1e-3),
            "v: agg.1 beats agg.0 (p < 1e-5)."
        );
        let s = pair_sentence("v:", &t, 1e-6);
        assert_eq!(s, "v: no significant difference between agg.1 and agg.0.");
    }

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00");
        assert_eq!(utc_date(951_782_400 + 3_661), "2000-02-29 01:01");
        assert_eq!(utc_date(1_798_761_599), "2026-12-31 23:59");
    }

    #[test]
    fn ranges_and_escaping() {
        assert_eq!(ranges(&[1, 2, 3, 5, 7, 8]), "1–3, 5, 7–8");
        assert_eq!(ranges(&[]), "");
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn tests_csv_round_trip_and_refusals() {
        let csv = "metric,a,b,n,statistic,p_value,log10_p,median_diff,n_nonzero,p_method\n\
                   e_minus,m:act.1,m:act.2,10,3,1.5e-2,-1.823909,0.25,10,exact\n\
                   e_minus,m:act.1,n:act.1,0,,,,,0,\n";
        let r = parse_tests(csv).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].p_value, Some(0.015));
        assert_eq!(r[1].p_value, None);
        assert_eq!(TestRow::side(&r[0].b), ("m", "act.2"));
        assert!(parse_tests("x\n").is_err());
        let bad = csv.replace("1.5e-2", "NaN");
        assert!(parse_tests(&bad)
            .unwrap_err()
            .to_string()
            .contains("finite"));
    }

    #[test]
    fn page_has_no_scripts_and_escapes() {
        let p = Page {
            title: "t<1>".into(),
            settings: vec![("model".into(), "a&b".into())],
            significance: "s".into(),
            headlines: vec!["h".into()],
            sections: vec![Section {
                title: "Fig".into(),
                caption: "c".into(),
                figures: vec![Figure {
                    src: "eval/f.png".into(),
                    caption: "f".into(),
                }],
                missing: vec!["cannot".into()],
            }],
            tables: vec![],
            files: vec!["eval/tests.csv".into()],
        };
        let h = render(&p);
        assert!(!h.contains("<script"));
        assert!(h.contains("<img src=\"eval/f.png\""));
        assert!(h.contains("t&lt;1&gt;") && h.contains("a&amp;b"));
    }
}
