//! The admin routes (`/`, `/status`, `/status/services/NAME`) and the HTML status page.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State as AxumState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::sync::watch;

use super::Snapshot;

/// `/`, `/status` and `/status/services/{name}`, served from the latest snapshot.
pub fn routes(snapshots: watch::Receiver<Arc<Snapshot>>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/status", get(json))
        .route("/status/services/{name}", get(service))
        .with_state(snapshots)
}

type Snapshots = watch::Receiver<Arc<Snapshot>>;

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_string_pretty(value) {
        Ok(mut body) => {
            body.push('\n');
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response(),
    }
}

async fn json(AxumState(snapshots): AxumState<Snapshots>) -> Response {
    let snapshot = snapshots.borrow().clone();
    json_response(StatusCode::OK, &*snapshot)
}

async fn service(AxumState(snapshots): AxumState<Snapshots>, Path(name): Path<String>) -> Response {
    let snapshot = snapshots.borrow().clone();
    let explanation = snapshot.explain(&name);
    let known = explanation.served || !explanation.left_out.is_empty();
    let status = if known {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    json_response(status, &explanation)
}

async fn page(AxumState(snapshots): AxumState<Snapshots>) -> Response {
    let snapshot = snapshots.borrow().clone();
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        render_html(&snapshot),
    )
        .into_response()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| escape(&v.to_string()))
}

/// The status page: the same facts as `/status`, as plain HTML tables.
pub fn render_html(snapshot: &Snapshot) -> String {
    let mut h = String::new();
    let title = match &snapshot.syncer {
        Some(name) => format!("ksd-syncer {}", escape(name)),
        None => "ksd-syncer".to_owned(),
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head><body>\n\
         <h1>{title}</h1>\n<p>snapshot at {} (Unix seconds); synced: {}</p>\n",
        snapshot.taken_at, snapshot.synced
    );
    output_section(&mut h, snapshot);
    clusters_table(&mut h, snapshot);
    services_table(&mut h, snapshot);
    left_out_table(&mut h, snapshot);
    h.push_str("<h2>Conflicts</h2>\n<ul>\n");
    for conflict in &snapshot.conflicts {
        let _ = writeln!(h, "<li>{}</li>", escape(&conflict.message));
    }
    h.push_str("</ul>\n<p>JSON: <a href=\"/status\">/status</a></p>\n</body></html>\n");
    h
}

/// The file written for Traefik.
fn output_section(h: &mut String, snapshot: &Snapshot) {
    h.push_str("<h2>Output</h2>\n");
    match &snapshot.output {
        Some(o) => {
            let _ = writeln!(
                h,
                "<table><tr><th>path</th><td>{}</td></tr><tr><th>hash</th><td>{}</td></tr>\
                 <tr><th>bytes</th><td>{}</td></tr><tr><th>last write</th><td>{}</td></tr></table>",
                escape(&o.path),
                escape(&o.hash),
                o.bytes,
                opt(o.last_write)
            );
        }
        None => h.push_str("<p>not written yet</p>\n"),
    }
}

/// One row per cluster, with its listing facts, state and counts.
fn clusters_table(h: &mut String, snapshot: &Snapshot) {
    h.push_str(
        "<h2>Clusters</h2>\n<table>\n<tr><th>cluster</th><th>key</th><th>etag</th>\
         <th>last modified</th><th>changed at</th><th>state</th><th>reason</th><th>line</th>\
         <th>missing polls</th><th>served etag</th><th>servers</th><th>services</th></tr>\n",
    );
    for c in &snapshot.clusters {
        let reason = match (&c.reason, &c.detail) {
            (Some(r), Some(d)) => format!("{}: {}", escape(r), escape(d)),
            (Some(r), None) => escape(r),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            h,
            "<tr id=\"cluster-{name}\"><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{reason}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.key),
            opt(c.etag.as_deref()),
            opt(c.last_modified),
            opt(c.changed_at),
            c.state.as_str(),
            opt(c.line),
            c.missing_polls,
            opt(c.served_etag.as_deref()),
            c.servers,
            c.services.len(),
            name = escape(&c.name),
        );
    }
    h.push_str("</table>\n");
}

/// One row per service of each cluster, linking to its explanation.
fn services_table(h: &mut String, snapshot: &Snapshot) {
    h.push_str("<h2>Services</h2>\n<table>\n<tr><th>service</th><th>cluster</th><th>protocol</th><th>servers</th></tr>\n");
    for c in &snapshot.clusters {
        for s in c.services.iter() {
            let _ = writeln!(
                h,
                "<tr><td><a href=\"/status/services/{n}\">{n}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&c.name),
                escape(&s.protocol),
                escape(&s.servers.join(" ")),
                n = escape(&s.name),
            );
        }
    }
    h.push_str("</table>\n");
}

/// The services the guard left out of the file, per cluster.
fn left_out_table(h: &mut String, snapshot: &Snapshot) {
    h.push_str(
        "<h2>Left out</h2>\n<table>\n<tr><th>service</th><th>cluster</th><th>reason</th></tr>\n",
    );
    for c in &snapshot.clusters {
        for l in &c.left_out {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&l.service),
                escape(&c.name),
                escape(&l.reason)
            );
        }
    }
    h.push_str("</table>\n");
}
