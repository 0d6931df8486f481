//! `GET /dashboard/events`: the server-sent event stream a page listens to.
//!
//! A page first receives `hello` (`{"demo", "sample_ms", "frontend"}`), then every section the
//! sampler has published, then each section again whenever a newer version is published. Each
//! page holds a `watch` receiver, which keeps only the newest snapshot: a page that reads slowly
//! (or not at all) skips versions instead of queueing them, so nothing grows per page. The
//! stream ends when the front-end shuts down; `EventSource` in the page reconnects by itself.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde_json::json;
use tracing::Instrument;

use super::sampler::{self, SAMPLE_PERIOD, Section};
use super::{Dashboard, PAGES_MAX};
use crate::error::{Error, Result};

/// A comment line this often keeps proxies from closing an idle stream and lets the server
/// notice a page that went away.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One connected page; counted while it lives.
struct Page {
    dashboard: Dashboard,
}

impl Page {
    /// Counts a new page, starting the sampler if it is the first.
    fn open(dashboard: &Dashboard) -> Result<Self> {
        let mut pages = dashboard.pages();
        if pages.open >= PAGES_MAX {
            return Err(Error::Busy(format!(
                "{PAGES_MAX} dashboard pages are connected already; close one and reload"
            )));
        }
        pages.open += 1;
        dashboard
            .inner
            .metrics
            .pages
            .set(i64::try_from(pages.open).unwrap_or(i64::MAX));
        if !pages.sampling && !dashboard.inner.stop.is_cancelled() {
            pages.sampling = true;
            dashboard
                .inner
                .tasks
                .spawn(sampler::run(dashboard.clone()).instrument(dashboard.inner.span.clone()));
        }
        Ok(Self {
            dashboard: dashboard.clone(),
        })
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let mut pages = self.dashboard.pages();
        pages.open = pages.open.saturating_sub(1);
        self.dashboard
            .inner
            .metrics
            .pages
            .set(i64::try_from(pages.open).unwrap_or(i64::MAX));
    }
}

/// `GET /dashboard/events`.
///
/// # Errors
/// [`Error::Busy`] when [`PAGES_MAX`] pages are connected already.
pub async fn events_get(
    State(dashboard): State<Dashboard>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let page = Page::open(&dashboard)?;
    let hello = json!({
        "demo": dashboard.inner.demo.is_some(),
        "sample_ms": u64::try_from(SAMPLE_PERIOD.as_millis()).unwrap_or(u64::MAX),
        "frontend": dashboard.inner.frontend_url,
    });
    let hello = Event::default().event("hello").data(hello.to_string());
    let receiver = dashboard.inner.snapshot.subscribe();
    // The page guard rides along in the stream's state: the page counts as connected exactly
    // as long as the response body lives.
    let updates = futures::stream::unfold(
        (receiver, [0u64; Section::ALL.len()], true, page),
        |(mut receiver, mut sent, first, page)| async move {
            if !first && receiver.changed().await.is_err() {
                return None;
            }
            let events: Vec<Event> = {
                let snapshot = receiver.borrow_and_update();
                Section::ALL
                    .iter()
                    .filter_map(|section| {
                        let published = snapshot.get(*section)?;
                        let seen = &mut sent[section.index()];
                        if published.version <= *seen {
                            return None;
                        }
                        *seen = published.version;
                        Some(
                            Event::default()
                                .event(section.name())
                                .data(&*published.json),
                        )
                    })
                    .collect()
            };
            Some((events, (receiver, sent, false, page)))
        },
    )
    .flat_map(|events| futures::stream::iter(events.into_iter().map(Ok)));
    let stream = futures::stream::once(async move { Ok(hello) })
        .chain(updates)
        .take_until(dashboard.inner.stop.clone().cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
