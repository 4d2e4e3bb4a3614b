//! Hand-written SVG bar charts for `bench compare`: grouped bars (one group
//! per category, one bar per series), linear or log-10 y axis, a legend.
//! Plain SVG 1.1 with escaped text; no dependencies.

use std::fmt::Write as _;

/// Chart width in pixels.
const WIDTH: f64 = 900.0;
/// Chart height in pixels.
const HEIGHT: f64 = 480.0;
const MARGIN_LEFT: f64 = 90.0;
const MARGIN_RIGHT: f64 = 160.0;
const MARGIN_TOP: f64 = 50.0;
const MARGIN_BOTTOM: f64 = 70.0;
/// Series colours, reused in order.
const COLOURS: &[&str] = &["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];

/// One series of a grouped bar chart: a name and one value per group
/// (None: no bar).
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend label (a broker name).
    pub name: String,
    /// One value per group.
    pub values: Vec<Option<f64>>,
}

/// Escapes text for XML content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// "Nice" upper bound for a linear axis: 1, 2 or 5 times a power of ten.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

fn fmt_tick(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else if v >= 1.0 || v == 0.0 {
        format!("{v}")
    } else {
        format!("{v:.2}")
    }
}

/// Renders a grouped bar chart. With `log_scale`, values <= 0 draw no bar
/// (log of zero is undefined). Each drawn bar is a `<rect class="bar">`.
pub fn grouped_bar_chart(title: &str, y_label: &str, groups: &[String], series: &[Series], log_scale: bool) -> String {
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let values = series.iter().flat_map(|s| s.values.iter().flatten().copied()).filter(|v| v.is_finite());
    let positive: Vec<f64> = values.filter(|v| *v > 0.0).collect();
    let max = positive.iter().copied().fold(0.0f64, f64::max);
    let min_pos = positive.iter().copied().fold(f64::INFINITY, f64::min);

    // y mapping: value -> pixel height above the axis.
    let (lo_exp, hi_exp) = if log_scale && !positive.is_empty() {
        (min_pos.log10().floor(), max.log10().ceil().max(min_pos.log10().floor() + 1.0))
    } else {
        (0.0, 1.0)
    };
    let y_top = if log_scale { 10f64.powf(hi_exp) } else { nice_ceiling(max) };
    let height_of = |v: f64| -> Option<f64> {
        if !v.is_finite() {
            return None;
        }
        if log_scale {
            if v <= 0.0 {
                return None;
            }
            let f = (v.log10() - lo_exp) / (hi_exp - lo_exp);
            Some(f.clamp(0.0, 1.0) * plot_h)
        } else {
            Some((v.max(0.0) / y_top).clamp(0.0, 1.0) * plot_h)
        }
    };

    let mut s = String::new();
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        xml_escape(title)
    );
    let axis_y = MARGIN_TOP + plot_h;
    // Grid lines and ticks.
    let ticks: Vec<f64> = if log_scale {
        ((lo_exp as i64)..=(hi_exp as i64)).map(|e| 10f64.powi(e as i32)).collect()
    } else {
        (0..=5).map(|i| y_top * i as f64 / 5.0).collect()
    };
    for t in ticks {
        let h = if log_scale { (t.log10() - lo_exp) / (hi_exp - lo_exp) * plot_h } else { t / y_top * plot_h };
        let y = axis_y - h;
        let _ = writeln!(
            s,
            r##"<line x1="{MARGIN_LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#dddddd"/>"##,
            MARGIN_LEFT + plot_w
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            MARGIN_LEFT - 6.0,
            y + 4.0,
            xml_escape(&fmt_tick(t))
        );
    }
    let _ = writeln!(
        s,
        r#"<line x1="{MARGIN_LEFT}" y1="{axis_y}" x2="{:.1}" y2="{axis_y}" stroke="black"/>"#,
        MARGIN_LEFT + plot_w
    );
    let _ = writeln!(s, r#"<line x1="{MARGIN_LEFT}" y1="{MARGIN_TOP}" x2="{MARGIN_LEFT}" y2="{axis_y}" stroke="black"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">{}</text>"#,
        MARGIN_TOP + plot_h / 2.0,
        MARGIN_TOP + plot_h / 2.0,
        xml_escape(&format!("{y_label}{}", if log_scale { " (log scale)" } else { "" }))
    );

    // Bars.
    let n_groups = groups.len().max(1) as f64;
    let group_w = plot_w / n_groups;
    let bar_w = (group_w * 0.8) / series.len().max(1) as f64;
    for (gi, g) in groups.iter().enumerate() {
        let gx = MARGIN_LEFT + group_w * gi as f64 + group_w * 0.1;
        for (si, ser) in series.iter().enumerate() {
            let Some(Some(v)) = ser.values.get(gi) else { continue };
            let Some(h) = height_of(*v) else { continue };
            let x = gx + bar_w * si as f64;
            let colour = COLOURS[si % COLOURS.len()];
            let _ = writeln!(
                s,
                r#"<rect class="bar" x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{colour}"><title>{}</title></rect>"#,
                axis_y - h,
                (bar_w - 2.0).max(1.0),
                xml_escape(&format!("{} {}: {}", ser.name, g, crate::bench::report::fmt_value(*v)))
            );
        }
        // Alternate label rows when groups are narrow, so labels do not overlap.
        let row = if group_w < 90.0 && gi % 2 == 1 { 14.0 } else { 0.0 };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            gx + group_w * 0.4,
            axis_y + 18.0 + row,
            xml_escape(g)
        );
    }

    // Legend.
    for (si, ser) in series.iter().enumerate() {
        let y = MARGIN_TOP + 20.0 * si as f64;
        let x = WIDTH - MARGIN_RIGHT + 20.0;
        let colour = COLOURS[si % COLOURS.len()];
        let _ = writeln!(s, r#"<rect x="{x}" y="{y}" width="12" height="12" fill="{colour}"/>"#);
        let _ = writeln!(s, r#"<text x="{}" y="{}">{}</text>"#, x + 18.0, y + 10.0, xml_escape(&ser.name));
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small well-formedness checker: tags nest and close, attributes are
    /// quoted, text holds no raw `<` and only known entities.
    fn check_xml(doc: &str) -> Result<usize, String> {
        let mut stack: Vec<String> = Vec::new();
        let mut elements = 0;
        let mut rest = doc;
        let mut seen_root = false;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("<?") {
                let end = after.find("?>").ok_or("unterminated declaration")?;
                rest = &after[end + 2..];
            } else if let Some(after) = rest.strip_prefix("</") {
                let end = after.find('>').ok_or("unterminated end tag")?;
                let name = after[..end].trim();
                match stack.pop() {
                    Some(open) if open == name => {}
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
                rest = &after[end + 1..];
            } else if let Some(after) = rest.strip_prefix('<') {
                let end = after.find('>').ok_or("unterminated tag")?;
                let inner = &after[..end];
                let self_closing = inner.ends_with('/');
                let inner = inner.trim_end_matches('/');
                let name: String = inner.chars().take_while(|c| !c.is_whitespace()).collect();
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':') {
                    return Err(format!("bad tag name in <{inner}>"));
                }
                // Attributes: name="value" pairs.
                let mut attrs = inner[name.len()..].trim();
                while !attrs.is_empty() {
                    let eq = attrs.find('=').ok_or(format!("attribute without value in <{inner}>"))?;
                    let v = &attrs[eq + 1..];
                    let q = v.chars().next().ok_or("empty attribute")?;
                    if q != '"' && q != '\'' {
                        return Err(format!("unquoted attribute in <{inner}>"));
                    }
                    let close = v[1..].find(q).ok_or("unterminated attribute")?;
                    if v[1..1 + close].contains('<') {
                        return Err("< in attribute".into());
                    }
                    attrs = v[close + 2..].trim_start();
                }
                if stack.is_empty() {
                    if seen_root {
                        return Err("two root elements".into());
                    }
                    seen_root = true;
                }
                elements += 1;
                if !self_closing {
                    stack.push(name);
                }
                rest = &after[end + 1..];
            } else {
                let end = rest.find('<').unwrap_or(rest.len());
                let text = &rest[..end];
                if !stack.is_empty() || !text.trim().is_empty() {
                    if stack.is_empty() {
                        return Err("text outside the root".into());
                    }
                    let mut t = text;
                    while let Some(i) = t.find('&') {
                        let semi = t[i..].find(';').ok_or("bare &")?;
                        let ent = &t[i + 1..i + semi];
                        if !["amp", "lt", "gt", "quot", "apos"].contains(&ent) {
                            return Err(format!("unknown entity &{ent};"));
                        }
                        t = &t[i + semi + 1..];
                    }
                }
                rest = &rest[end..];
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed {stack:?}"));
        }
        if !seen_root {
            return Err("no root".into());
        }
        Ok(elements)
    }

    fn groups(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("g<{i}>&")).collect()
    }

    #[test]
    fn checker_rejects_bad_xml() {
        assert!(check_xml("<a><b></a></b>").is_err());
        assert!(check_xml("<a x=1/>").is_err());
        assert!(check_xml("<a>&</a>").is_err());
        assert!(check_xml("<a></a><b/>").is_err());
        assert!(check_xml("<a>").is_err());
        assert!(check_xml(r#"<a x="1"><b/>t &amp; u</a>"#).is_ok());
    }

    #[test]
    fn linear_chart_is_well_formed_with_one_bar_per_value() {
        let series = vec![
            Series { name: "corestream".into(), values: vec![Some(500.0), Some(300.0), Some(0.0)] },
            Series { name: "kafka \"3.7\"".into(), values: vec![Some(250.0), None, Some(10.0)] },
        ];
        let svg = grouped_bar_chart("Throughput <MB/s>", "MB/s", &groups(3), &series, false);
        check_xml(&svg).unwrap();
        assert_eq!(svg.matches(r#"class="bar""#).count(), 5);
        assert!(svg.contains("g&lt;0&gt;&amp;"));
        assert!(svg.contains("kafka &quot;3.7&quot;"));
    }

    #[test]
    fn log_chart_skips_non_positive_values() {
        let series = vec![
            Series { name: "a".into(), values: vec![Some(100.0), Some(2000.0), Some(90_000.0), Some(0.0), Some(5.0)] },
            Series { name: "b".into(), values: vec![Some(80.0), Some(f64::NAN), Some(1e6), Some(3.0), None] },
            Series { name: "c".into(), values: vec![Some(1.0), Some(1.0), Some(1.0), Some(1.0), Some(1.0)] },
        ];
        let svg = grouped_bar_chart("Latency", "µs", &groups(5), &series, true);
        check_xml(&svg).unwrap();
        assert_eq!(svg.matches(r#"class="bar""#).count(), 4 + 3 + 5);
        assert!(svg.contains("(log scale)"));
    }

    #[test]
    fn empty_chart_is_still_valid() {
        let svg = grouped_bar_chart("nothing", "x", &[], &[], true);
        check_xml(&svg).unwrap();
        assert_eq!(svg.matches(r#"class="bar""#).count(), 0);
        let svg = grouped_bar_chart("zeros", "x", &groups(1), &[Series { name: "a".into(), values: vec![Some(0.0)] }], false);
        check_xml(&svg).unwrap();
        assert_eq!(svg.matches(r#"class="bar""#).count(), 1);
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(420.0), 500.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
        assert_eq!(nice_ceiling(1001.0), 2000.0);
        assert_eq!(fmt_tick(2000.0), "2k");
        assert_eq!(fmt_tick(3e6), "3M");
    }
}
