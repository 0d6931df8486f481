//! The evaluation's figures, each drawn twice: PNG for quick viewing, SVG for documents.
//!
//! Text is drawn with DejaVu Sans compiled into the binary (registered once as `sans-serif`),
//! so PNGs render the same on machines without system fonts.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::cache_timeline::{CacheTimeline, Departure};
use crate::error::{Error, Result};
use crate::netchaos::timeline::{Bucket, FaultSpan};

/// The only font family the figures use.
const FONT: &str = "sans-serif";

/// Size of a latency figure in pixels.
const LATENCY_SIZE: (u32, u32) = (1000, 650);

/// Width of a timeline figure; its height grows with the number of stocks.
const TIMELINE_WIDTH: u32 = 1400;

/// Height of one stock's row in a timeline, in pixels.
const TIMELINE_ROW_HEIGHT: u32 = 30;

/// Colours of the series, in order (Tableau 10, readable in print and for most colour-blind
/// readers).
const SERIES_COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

const EVICTION_COLOUR: RGBColor = RGBColor(214, 39, 40);
const INVALIDATION_COLOUR: RGBColor = RGBColor(31, 119, 180);
const CACHED_COLOUR: RGBColor = RGBColor(120, 180, 120);

/// One point of a latency series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyPoint {
    /// Trade probability.
    pub p: f64,
    /// Mean latency, µs.
    pub mean_us: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
}

/// A named series of points, such as "cache on".
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySeries {
    /// Legend label.
    pub label: String,
    /// Points with data, in order of p.
    pub points: Vec<LatencyPoint>,
}

/// Registers the embedded font once; every figure calls this first.
fn register_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "the embedded DejaVu Sans font cannot be read".to_owned())
        })
        .clone()
}

/// Latency against trade probability for one request type: p50 and mean as lines, p99 as a
/// whisker above each median, one colour per series. Writes `{base}.png` and `{base}.svg`.
///
/// # Errors
/// A file cannot be written.
pub fn latency_figure(base: &Path, title: &str, series: &[LatencySeries]) -> Result<Vec<PathBuf>> {
    let inputs = (title, series);
    draw_generic(base, LATENCY_SIZE, &inputs, &LatencyDrawing)
}

/// Which stocks were cached when, and entries leaving, with eviction and invalidation counts
/// per sample interval above. Writes `{base}.png` and `{base}.svg`.
///
/// # Errors
/// A file cannot be written.
pub fn cache_timeline_figure(
    base: &Path,
    title: &str,
    timeline: &CacheTimeline,
) -> Result<Vec<PathBuf>> {
    let rows = u32::try_from(timeline.stocks.len().max(1)).unwrap_or(u32::MAX);
    let height = 330 + rows.saturating_mul(TIMELINE_ROW_HEIGHT);
    let inputs = (title, timeline);
    draw_generic(base, (TIMELINE_WIDTH, height), &inputs, &TimelineDrawing)
}

/// Faults against what clients saw: trade latency (p50, p99, slowest request) above, answers
/// and failures per bucket below, each fault a numbered shaded span explained in a key under
/// the plots. Writes `{base}.png` and `{base}.svg`.
///
/// # Errors
/// A file cannot be written.
pub fn fault_timeline_figure(
    base: &Path,
    title: &str,
    buckets: &[Bucket],
    faults: &[FaultSpan],
) -> Result<Vec<PathBuf>> {
    let rows = u32::try_from(faults.len()).unwrap_or(u32::MAX);
    let height = 760 + rows.div_ceil(2).saturating_mul(FAULT_KEY_ROW_HEIGHT);
    let inputs = (title, buckets, faults);
    draw_generic(
        base,
        (TIMELINE_WIDTH, height),
        &inputs,
        &FaultTimelineDrawing,
    )
}

/// Height of one line of the fault key, in pixels.
const FAULT_KEY_ROW_HEIGHT: u32 = 22;

const FAULT_COLOUR: RGBColor = RGBColor(214, 39, 40);

/// A drawing function for any backend. Rust closures cannot be generic, hence a trait.
trait Drawing<T: ?Sized> {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        inputs: &T,
    ) -> Result<(), String>;
}

fn draw_generic<T: ?Sized, D: Drawing<T>>(
    base: &Path,
    size: (u32, u32),
    inputs: &T,
    drawing: &D,
) -> Result<Vec<PathBuf>> {
    let png = base.with_extension("png");
    let svg = base.with_extension("svg");
    let fail = |path: &Path, detail: String| Error::Plot {
        path: path.display().to_string(),
        detail,
    };
    register_font().map_err(|e| fail(&png, e))?;
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        drawing.draw(&root, inputs).map_err(|e| fail(&png, e))?;
        root.present().map_err(|e| fail(&png, e.to_string()))?;
    }
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        drawing.draw(&root, inputs).map_err(|e| fail(&svg, e))?;
        root.present().map_err(|e| fail(&svg, e.to_string()))?;
    }
    Ok(vec![png, svg])
}

/// Turns a plotting error into text (the backends' error types differ).
fn text<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

struct LatencyDrawing;

impl<'a> Drawing<(&'a str, &'a [LatencySeries])> for LatencyDrawing {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        &(title, series): &(&'a str, &'a [LatencySeries]),
    ) -> Result<(), String> {
        root.fill(&WHITE).map_err(text)?;
        let points = series.iter().flat_map(|s| s.points.iter());
        let lowest = points
            .clone()
            .map(|p| p.p50_us.min(p.mean_us))
            .fold(f64::INFINITY, f64::min);
        let highest = points
            .clone()
            .map(|p| p.p99_us.max(p.mean_us))
            .fold(0.0, f64::max);
        // The axis starts at a power of ten because plotters puts log ticks only from the first
        // power of ten in range; the headroom on top keeps the legend off the data.
        let (y_min, y_max) = if lowest.is_finite() && highest > 0.0 {
            (
                10f64.powf((lowest * 0.9).max(1.0).log10().floor()),
                highest * 8.0,
            )
        } else {
            (1.0, 1000.0)
        };
        let caption = if lowest.is_finite() {
            title.to_owned()
        } else {
            format!("{title}: no requests of this type")
        };
        let mut chart = ChartBuilder::on(root)
            .caption(caption, (FONT, 26))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(-0.1f64..0.9f64, (y_min..y_max).log_scale())
            .map_err(text)?;
        chart
            .configure_mesh()
            .x_desc("p (probability of a trade after a lookup)")
            .y_desc("latency (µs, log scale)")
            .x_labels(10)
            // Enough key points for a grid line at every 1..9 x 10^k; only 1, 2 and 5 are
            // labelled, as on log paper.
            .y_labels(40)
            .x_label_formatter(&|x| format!("{x:.1}"))
            .y_label_formatter(&|y| log_label(*y))
            .label_style((FONT, 16))
            .axis_desc_style((FONT, 18))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(text)?;
        // Series side by side around each p, so whiskers do not hide each other.
        let spread = 0.015;
        let centre = (series.len().saturating_sub(1)) as f64 / 2.0;
        for (i, s) in series.iter().enumerate() {
            let colour = SERIES_COLOURS[i % SERIES_COLOURS.len()];
            let dx = (i as f64 - centre) * spread;
            let at = |p: &LatencyPoint| p.p + dx;
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().map(|p| (at(p), p.p50_us)),
                    colour.stroke_width(3),
                ))
                .map_err(text)?
                .label(format!("{}: p50", s.label))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
                });
            chart
                .draw_series(
                    s.points
                        .iter()
                        .map(|p| Circle::new((at(p), p.p50_us), 5, colour.filled())),
                )
                .map_err(text)?;
            chart
                .draw_series(DashedLineSeries::new(
                    s.points.iter().map(|p| (at(p), p.mean_us)),
                    8,
                    5,
                    colour.stroke_width(2),
                ))
                .map_err(text)?
                .label(format!("{}: mean", s.label))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 8, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(
                    s.points
                        .iter()
                        .map(|p| TriangleMarker::new((at(p), p.mean_us), 6, colour.filled())),
                )
                .map_err(text)?;
            // Whisker from the median up to p99, with a cap.
            chart
                .draw_series(s.points.iter().flat_map(|p| {
                    let x = at(p);
                    [
                        PathElement::new(
                            vec![(x, p.p50_us), (x, p.p99_us)],
                            colour.stroke_width(2),
                        ),
                        PathElement::new(
                            vec![(x - spread / 2.0, p.p99_us), (x + spread / 2.0, p.p99_us)],
                            colour.stroke_width(2),
                        ),
                    ]
                }))
                .map_err(text)?
                .label(format!("{}: p99 (whisker top)", s.label))
                .legend(move |(x, y)| {
                    PathElement::new(
                        vec![(x + 12, y - 7), (x + 12, y + 7)],
                        colour.stroke_width(2),
                    )
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(text)?;
        Ok(())
    }
}

/// The label of a log-axis key point: `1`, `2` and `5` times a power of ten, else nothing.
fn log_label(us: f64) -> String {
    if us <= 0.0 {
        return String::new();
    }
    let mantissa = us / 10f64.powf(us.log10().floor());
    let rounded = mantissa.round();
    if (mantissa - rounded).abs() < 0.01 && [1.0, 2.0, 5.0].contains(&rounded) {
        format_us(us)
    } else {
        String::new()
    }
}

/// `1500` → `1.5ms`, `80` → `80µs`.
fn format_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{}s", trim(us / 1_000_000.0))
    } else if us >= 1000.0 {
        format!("{}ms", trim(us / 1000.0))
    } else {
        format!("{}µs", trim(us))
    }
}

fn trim(v: f64) -> String {
    if v >= 10.0 || (v - v.round()).abs() < 0.05 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

struct TimelineDrawing;

impl<'a> Drawing<(&'a str, &'a CacheTimeline)> for TimelineDrawing {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        &(title, timeline): &(&'a str, &'a CacheTimeline),
    ) -> Result<(), String> {
        root.fill(&WHITE).map_err(text)?;
        let title_area = root.titled(title, (FONT, 26)).map_err(text)?;
        let (counters, rows_area) = title_area.split_vertically(230);
        let end = timeline.duration_s.max(0.001);

        // Counter deltas per sample interval.
        let delta_max = timeline
            .deltas
            .iter()
            .map(|d| d.evictions.max(d.invalidations))
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        let mut chart = ChartBuilder::on(&counters)
            .margin(15)
            .x_label_area_size(30)
            .y_label_area_size(140)
            .build_cartesian_2d(0f64..end, 0f64..delta_max * 1.6)
            .map_err(text)?;
        chart
            .configure_mesh()
            .y_desc("count per sample")
            .y_labels(4)
            .x_label_formatter(&|x| format!("{x:.1}s"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(text)?;
        // One bar per sample interval, evictions and invalidations side by side.
        let intervals = || {
            let mut previous = 0.0;
            timeline.deltas.iter().map(move |d| {
                let from = previous;
                previous = d.at_s;
                (from, d.at_s, d)
            })
        };
        chart
            .draw_series(
                intervals()
                    .filter(|(_, _, d)| d.evictions > 0)
                    .map(|(from, to, d)| {
                        Rectangle::new(
                            [(from, 0.0), ((from + to) / 2.0, d.evictions as f64)],
                            EVICTION_COLOUR.filled(),
                        )
                    }),
            )
            .map_err(text)?
            .label(format!(
                "evictions (counter; {} in all)",
                timeline.evictions
            ))
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 6), (x + 24, y + 6)], EVICTION_COLOUR.filled())
            });
        chart
            .draw_series(intervals().filter(|(_, _, d)| d.invalidations > 0).map(
                |(from, to, d)| {
                    Rectangle::new(
                        [((from + to) / 2.0, 0.0), (to, d.invalidations as f64)],
                        INVALIDATION_COLOUR.filled(),
                    )
                },
            ))
            .map_err(text)?
            .label(format!(
                "invalidations from the catalog (counter; {} in all)",
                timeline.invalidations
            ))
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 6), (x + 24, y + 6)], INVALIDATION_COLOUR.filled())
            });
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(text)?;

        // One row per stock: filled while cached, marks where an entry left.
        let rows = timeline.stocks.len().max(1);
        let mut chart = ChartBuilder::on(&rows_area)
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(140)
            // Two empty rows on top hold the legend.
            .build_cartesian_2d(0f64..end, 0f64..rows as f64 + 2.2)
            .map_err(text)?;
        chart
            .configure_mesh()
            .x_desc("time since sampling started (s)")
            .x_label_formatter(&|x| format!("{x:.1}s"))
            // Stock names are drawn below, one per row centre; numeric ticks would not line up.
            .y_labels(0)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 16))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(text)?;
        let name_style = TextStyle::from((FONT, 15).into_font())
            .pos(Pos::new(HPos::Right, VPos::Center))
            .color(&BLACK);
        for (r, name) in timeline.stocks.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(0.0, r as f64 + 0.5));
            root.draw(&Text::new(name.clone(), (x - 8, y), name_style.clone()))
                .map_err(text)?;
        }
        chart
            .draw_series(timeline.residencies.iter().map(|r| {
                let y = r.stock as f64;
                Rectangle::new(
                    [
                        (r.from_s, y + 0.2),
                        (r.to_s.max(r.from_s + end / 2000.0), y + 0.8),
                    ],
                    CACHED_COLOUR.filled(),
                )
            }))
            .map_err(text)?
            .label(format!(
                "cached (capacity {}; {} samples)",
                timeline.capacity, timeline.samples
            ))
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 24, y + 6)], CACHED_COLOUR.filled()));
        let evicted = timeline
            .departures
            .iter()
            .filter(|d| d.kind == Departure::Evicted);
        chart
            .draw_series(evicted.map(|d| {
                Cross::new(
                    (d.at_s, d.stock as f64 + 0.5),
                    6,
                    EVICTION_COLOUR.stroke_width(2),
                )
            }))
            .map_err(text)?
            .label(format!(
                "left: evicted (LRU): {}",
                timeline.count(Departure::Evicted)
            ))
            .legend(|(x, y)| {
                EmptyElement::at((x + 12, y))
                    + Cross::new((0, 0), 6, EVICTION_COLOUR.stroke_width(2))
            });
        let invalidated = timeline
            .departures
            .iter()
            .filter(|d| d.kind == Departure::Invalidated);
        chart
            .draw_series(invalidated.map(|d| {
                Circle::new(
                    (d.at_s, d.stock as f64 + 0.5),
                    5,
                    INVALIDATION_COLOUR.stroke_width(2),
                )
            }))
            .map_err(text)?
            .label(format!(
                "left: invalidated (stock traded): {}",
                timeline.count(Departure::Invalidated)
            ))
            .legend(|(x, y)| {
                EmptyElement::at((x + 12, y))
                    + Circle::new((0, 0), 5, INVALIDATION_COLOUR.stroke_width(2))
            });
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(text)?;
        Ok(())
    }
}

struct FaultTimelineDrawing;

/// One series of the latency panel, read from a bucket.
type BucketValue = fn(&Bucket) -> Option<f64>;

type FaultTimelineInputs<'a> = (&'a str, &'a [Bucket], &'a [FaultSpan]);

impl<'a> Drawing<FaultTimelineInputs<'a>> for FaultTimelineDrawing {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        &(title, buckets, faults): &FaultTimelineInputs<'a>,
    ) -> Result<(), String> {
        root.fill(&WHITE).map_err(text)?;
        let area = root.titled(title, (FONT, 24)).map_err(text)?;
        let (latency_area, rest) = area.split_vertically(400);
        let (counts_area, key_area) = rest.split_vertically(300);
        let end = buckets
            .last()
            .map_or(1.0, |b| b.start_s + 0.25)
            .max(faults.iter().map(|f| f.end_s).fold(0.0, f64::max));
        let shade = FAULT_COLOUR.mix(0.12).filled();

        let slowest = buckets.iter().filter_map(|b| b.max_ms).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&latency_area)
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..end, (0.1f64..slowest * 3.0).log_scale())
            .map_err(text)?;
        chart
            .configure_mesh()
            .y_desc("trade latency (ms, log scale)")
            .y_labels(30)
            .y_label_formatter(&|ms| log_label(*ms * 1000.0))
            .x_label_formatter(&|s| format!("{s:.0} s"))
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 16))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(text)?;
        chart
            .draw_series(
                faults
                    .iter()
                    .map(|f| Rectangle::new([(f.start_s, 0.1), (f.end_s, slowest * 3.0)], shade)),
            )
            .map_err(text)?;
        chart
            .draw_series(faults.iter().enumerate().map(|(i, f)| {
                Text::new(
                    format!("{}", i + 1),
                    (f.start_s, slowest * 2.0),
                    (FONT, 15).into_font().color(&FAULT_COLOUR),
                )
            }))
            .map_err(text)?;
        let series: [(&str, RGBColor, BucketValue); 3] = [
            ("trade p50", SERIES_COLOURS[0], |b| b.trade_p50_ms),
            ("trade p99", SERIES_COLOURS[1], |b| b.trade_p99_ms),
            ("slowest request", SERIES_COLOURS[3], |b| b.max_ms),
        ];
        for (label, colour, value) in series {
            chart
                .draw_series(buckets.iter().filter_map(|b| {
                    value(b)
                        .map(|v| Circle::new((b.start_s + 0.125, v.max(0.1)), 2, colour.filled()))
                }))
                .map_err(text)?
                .label(label)
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, colour.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(text)?;

        let most = buckets
            .iter()
            .map(|b| b.trades_ok.max(b.unknown + b.errors))
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        let mut chart = ChartBuilder::on(&counts_area)
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..end, 0f64..most * 1.15)
            .map_err(text)?;
        chart
            .configure_mesh()
            .x_desc("time since the start of the run (s)")
            .y_desc("per 0.25 s")
            .x_label_formatter(&|s| format!("{s:.0} s"))
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 16))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(text)?;
        chart
            .draw_series(
                faults
                    .iter()
                    .map(|f| Rectangle::new([(f.start_s, 0.0), (f.end_s, most * 1.15)], shade)),
            )
            .map_err(text)?;
        chart
            .draw_series(LineSeries::new(
                buckets
                    .iter()
                    .map(|b| (b.start_s + 0.125, b.trades_ok as f64)),
                SERIES_COLOURS[2].stroke_width(2),
            ))
            .map_err(text)?
            .label("trades acknowledged")
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], SERIES_COLOURS[2].stroke_width(2))
            });
        chart
            .draw_series(
                buckets
                    .iter()
                    .filter(|b| b.unknown + b.errors > 0)
                    .map(|b| {
                        Rectangle::new(
                            [
                                (b.start_s + 0.03, 0.0),
                                (b.start_s + 0.22, (b.unknown + b.errors) as f64),
                            ],
                            FAULT_COLOUR.filled(),
                        )
                    }),
            )
            .map_err(text)?
            .label("requests failed or without a reply")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], FAULT_COLOUR.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(text)?;

        // The key: two columns of "n: fault (from - to)".
        let style = (FONT, 15).into_font().color(&BLACK);
        let half = faults.len().div_ceil(2);
        let width = i32::try_from(TIMELINE_WIDTH / 2).unwrap_or(700);
        for (i, f) in faults.iter().enumerate() {
            let column = i32::from(i >= half);
            let row = i32::try_from(if i >= half { i - half } else { i }).unwrap_or(0);
            let line = format!("{}: {} ({:.1}-{:.1} s)", i + 1, f.label, f.start_s, f.end_s);
            key_area
                .draw(&Text::new(
                    line,
                    (20 + column * width, 5 + row * 22),
                    style.clone(),
                ))
                .map_err(text)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bazaar_api::Version;
    use bazaar_api::client::{CacheEntryView, CacheView};

    use super::*;
    use crate::cache_timeline::CacheSample;

    fn assert_png_and_svg(files: &[PathBuf]) {
        assert_eq!(files.len(), 2);
        let png = std::fs::read(&files[0]).expect("png written");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{:?}", files[0]);
        let svg = std::fs::read_to_string(&files[1]).expect("svg written");
        assert!(
            svg.contains("<svg") && svg.contains("<text"),
            "{:?}",
            files[1]
        );
    }

    #[test]
    fn latency_figures_draw_with_and_without_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let point = |p: f64, p50: f64| LatencyPoint {
            p,
            mean_us: p50 * 1.2,
            p50_us: p50,
            p99_us: p50 * 5.0,
        };
        let series = [
            LatencySeries {
                label: "cache on".into(),
                points: vec![point(0.0, 80.0), point(0.4, 150.0), point(0.8, 300.0)],
            },
            LatencySeries {
                label: "cache off".into(),
                points: vec![point(0.0, 400.0), point(0.8, 900.0)],
            },
        ];
        let files = latency_figure(&dir.path().join("full"), "Lookup", &series).expect("drawn");
        assert_png_and_svg(&files);
        let empty = [LatencySeries {
            label: "cache on".into(),
            points: Vec::new(),
        }];
        let files = latency_figure(&dir.path().join("empty"), "Trade", &empty).expect("drawn");
        assert_png_and_svg(&files);
    }

    #[test]
    fn a_timeline_draws_even_from_no_samples() {
        let dir = tempfile::tempdir().expect("tempdir");
        let view = |names: &[&str], evictions: u64| CacheView {
            capacity: 2,
            hits: 0,
            misses: 0,
            evictions,
            invalidations: 0,
            enabled: true,
            entries: names
                .iter()
                .map(|n| CacheEntryView {
                    name: (*n).into(),
                    version: Version(1),
                    position: bazaar_api::log::Position(1),
                })
                .collect(),
        };
        let samples = [
            CacheSample {
                at: Duration::ZERO,
                view: view(&["A", "B"], 0),
            },
            CacheSample {
                at: Duration::from_millis(20),
                view: view(&["C", "A"], 1),
            },
        ];
        let stocks = ["A".to_owned(), "B".to_owned(), "C".to_owned()];
        let timeline = CacheTimeline::from_samples(&samples, &stocks);
        let files =
            cache_timeline_figure(&dir.path().join("t"), "Cache", &timeline).expect("drawn");
        assert_png_and_svg(&files);
        let empty = CacheTimeline::from_samples(&[], &stocks);
        let files = cache_timeline_figure(&dir.path().join("e"), "Cache", &empty).expect("drawn");
        assert_png_and_svg(&files);
    }

    #[test]
    fn microseconds_are_labelled_readably() {
        assert_eq!(format_us(80.0), "80µs");
        assert_eq!(format_us(2.5), "2.5µs");
        assert_eq!(format_us(1500.0), "1.5ms");
        assert_eq!(format_us(25_000.0), "25ms");
        assert_eq!(format_us(2_000_000.0), "2s");
        assert_eq!(log_label(200.0), "200µs");
        assert_eq!(log_label(5000.0), "5ms");
        assert_eq!(log_label(300.0), "");
        assert_eq!(log_label(0.0), "");
    }
}
