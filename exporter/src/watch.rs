//! The watch shell: kube-runtime watchers feed the [`Index`]; debounced snapshots go to the
//! writer.
//!
//! One watcher per resource and namespace (one per resource when all namespaces are watched),
//! each `watcher(..).default_backoff().modify(strip managed fields)`. A [`Sources`] value keeps
//! the per-watcher bookkeeping that makes re-lists safe: the objects of a (re-)list
//! (`Init`, `InitApply`..., `InitDone`) are buffered and swapped into the index at `InitDone`,
//! so a 410, a dropped watch or an API restart never shows the index a partial or empty state.
//! Nothing is published until every watcher has completed its first list.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::stream::{BoxStream, SelectAll};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use ksd_shared::names::{ClusterName, NameCollision, NameTemplate, ObjectFormat};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as make_watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::debounce::Debounce;
use crate::document::{self, Snapshot};
use crate::index::{
    Index, Published, SERVICE_NAME_LABEL, ServiceFacts, ServiceKey, SliceFacts, SliceKey,
    service_facts, slice_facts,
};
use crate::metrics::Metrics;
use ksd_runtime::error_chain;

/// What is watched and how the result is named and rendered.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// Selects the exported Services (empty: every Service).
    pub label_selector: String,
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    pub cluster: ClusterName,
    pub template: NameTemplate,
    pub formats: Vec<ObjectFormat>,
    pub debounce: Debounce,
}

/// The two watched resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Services,
    EndpointSlices,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Services => "services",
            Resource::EndpointSlices => "endpointslices",
        }
    }
}

/// One watcher's event.
#[derive(Debug)]
pub enum Update {
    // Boxed: a Service is twice the size of a slice, and events only pass through.
    Service(Box<Event<Service>>),
    Slice(Box<Event<EndpointSlice>>),
}

/// What handling one event did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handled {
    /// Something backends depend on changed.
    pub changed: bool,
    /// The watcher started a re-list after having completed a list before.
    pub restarted: bool,
    /// The watcher completed a (re-)list.
    pub listed: bool,
}

#[derive(Debug)]
struct Source {
    resource: Resource,
    /// The namespace watched; `None` for all.
    scope: Option<String>,
    /// Whether a list has completed at least once.
    synced: bool,
    /// Objects of the list in progress.
    services: Vec<(ServiceKey, ServiceFacts)>,
    slices: Vec<(SliceKey, Option<SliceFacts>)>,
}

/// The watchers' bookkeeping: which have synced, and the buffers of lists in progress.
#[derive(Debug)]
pub struct Sources {
    sources: Vec<Source>,
}

impl Sources {
    /// One Services and one EndpointSlices source per namespace, or one each for all
    /// namespaces when `namespaces` is empty. Source ids follow [`Sources::layout`].
    pub fn new(namespaces: &[String]) -> Sources {
        let sources = Self::layout(namespaces)
            .into_iter()
            .map(|(resource, scope)| Source {
                resource,
                scope,
                synced: false,
                services: Vec::new(),
                slices: Vec::new(),
            })
            .collect();
        Sources { sources }
    }

    /// The (resource, namespace) of each source id.
    pub fn layout(namespaces: &[String]) -> Vec<(Resource, Option<String>)> {
        let scopes: Vec<Option<String>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().cloned().map(Some).collect()
        };
        [Resource::Services, Resource::EndpointSlices]
            .into_iter()
            .flat_map(|resource| scopes.iter().map(move |scope| (resource, scope.clone())))
            .collect()
    }

    /// Whether every watcher has completed its first list.
    pub fn all_synced(&self) -> bool {
        self.sources.iter().all(|s| s.synced)
    }

    pub fn resource(&self, id: usize) -> Option<Resource> {
        self.sources.get(id).map(|s| s.resource)
    }

    pub fn scope(&self, id: usize) -> Option<&str> {
        self.sources.get(id).and_then(|s| s.scope.as_deref())
    }

    /// Applies one event of watcher `id` to `index`.
    pub fn handle(&mut self, index: &mut Index, id: usize, update: Update) -> Handled {
        let Some(source) = self.sources.get_mut(id) else {
            return Handled::default();
        };
        let scope = source.scope.as_deref();
        let mut handled = Handled::default();
        match update {
            Update::Service(event) => match *event {
                Event::Init => {
                    handled.restarted = source.synced;
                    source.services.clear();
                }
                Event::InitApply(service) => source.services.extend(service_facts(&service)),
                Event::InitDone => {
                    let listed = std::mem::take(&mut source.services);
                    handled.changed = index.replace_services(scope, listed);
                    handled.listed = true;
                    source.synced = true;
                }
                Event::Apply(service) => {
                    if let Some((key, facts)) = service_facts(&service) {
                        handled.changed = index.apply_service(key, facts);
                    }
                }
                Event::Delete(service) => {
                    if let Some((key, _)) = service_facts(&service) {
                        handled.changed = index.delete_service(&key);
                    }
                }
            },
            Update::Slice(event) => match *event {
                Event::Init => {
                    handled.restarted = source.synced;
                    source.slices.clear();
                }
                Event::InitApply(slice) => source.slices.extend(slice_facts(&slice)),
                Event::InitDone => {
                    let listed = std::mem::take(&mut source.slices);
                    handled.changed = index.replace_slices(scope, listed);
                    handled.listed = true;
                    source.synced = true;
                }
                Event::Apply(slice) => {
                    if let Some((key, facts)) = slice_facts(&slice) {
                        handled.changed = index.apply_slice(key, facts);
                    }
                }
                Event::Delete(slice) => {
                    if let Some((key, _)) = slice_facts(&slice) {
                        handled.changed = index.delete_slice(&key);
                    }
                }
            },
        }
        handled
    }
}

type Tagged = (usize, Result<Update, watcher::Error>);

/// The watchers for `config`, merged into one stream of events tagged with their source id.
pub fn watch_streams(
    client: &Client,
    config: &WatchConfig,
) -> SelectAll<BoxStream<'static, Tagged>> {
    let mut streams = SelectAll::new();
    for (id, (resource, scope)) in Sources::layout(&config.namespaces).into_iter().enumerate() {
        let stream: BoxStream<'static, Tagged> = match resource {
            Resource::Services => {
                let api: Api<Service> = api(client, scope.as_deref());
                let mut cfg = watcher::Config::default();
                if !config.label_selector.is_empty() {
                    cfg = cfg.labels(&config.label_selector);
                }
                tag(id, make_watcher(api, cfg), Update::Service)
            }
            Resource::EndpointSlices => {
                let api: Api<EndpointSlice> = api(client, scope.as_deref());
                // Only slices that name a Service can contribute; the join happens in memory
                // because Service labels are not reliably copied onto slices.
                let cfg = watcher::Config::default().labels(SERVICE_NAME_LABEL);
                tag(id, make_watcher(api, cfg), Update::Slice)
            }
        };
        streams.push(stream);
    }
    streams
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn tag<K, S>(id: usize, stream: S, wrap: fn(Box<Event<K>>) -> Update) -> BoxStream<'static, Tagged>
where
    K: kube::Resource + Clone + std::fmt::Debug + Send + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    stream
        .default_backoff()
        // managedFields are large and never read: drop them before anything keeps the object.
        .modify(|object: &mut K| object.managed_fields_mut().clear())
        .map(move |result| (id, result.map(|event| wrap(Box::new(event)))))
        .boxed()
}

/// Runs the index: applies watch events, and once every watcher has synced, sends a snapshot
/// at once and then after each debounced burst of changes. Returns when `shutdown` fires.
pub async fn run<S>(
    mut events: S,
    config: WatchConfig,
    metrics: Arc<Metrics>,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    shutdown: CancellationToken,
) where
    S: Stream<Item = Tagged> + Unpin,
{
    let mut sources = Sources::new(&config.namespaces);
    let mut index = Index::new();
    let mut published = Published::new(
        config.cluster.clone(),
        config.template.clone(),
        &config.formats,
    );
    let mut logged = Logged::default();
    let mut debounce = config.debounce.clone();
    let mut initial_sync_done = false;
    loop {
        let deadline = if initial_sync_done {
            debounce.deadline()
        } else {
            None
        };
        tokio::select! {
            // Deadline before events: a steady stream of events must not starve a publish that
            // MAX_DELAY says is due.
            biased;
            () = shutdown.cancelled() => return,
            () = sleep_until_opt(deadline) => {
                let first_change = debounce.first_change();
                debounce.clear();
                publish(&mut index, &mut published, &metrics, &snapshots, &mut logged, first_change);
            }
            item = events.next() => {
                let Some((id, result)) = item else {
                    // Watchers never end on their own; only a dropped client gets here.
                    error!("the Kubernetes watches ended");
                    return;
                };
                let resource = sources.resource(id).map_or("unknown", Resource::as_str);
                let scope = sources.scope(id).unwrap_or("*").to_owned();
                match result {
                    Err(err) => watch_failed(&metrics, resource, &scope, &err),
                    Ok(update) => {
                        let handled = sources.handle(&mut index, id, update);
                        if handled.restarted {
                            metrics.watch_restart(resource);
                            info!(
                                resource,
                                namespace = %scope,
                                "re-listing; the published state stays until the list completes"
                            );
                        }
                        if handled.listed {
                            debug!(resource, namespace = %scope, "list complete");
                        }
                        if handled.changed {
                            debounce.changed(Instant::now());
                        }
                        if !initial_sync_done && sources.all_synced() {
                            initial_sync_done = true;
                            info!(
                                services = index.service_count(),
                                "initial sync complete"
                            );
                            debounce.clear();
                            publish(&mut index, &mut published, &metrics, &snapshots, &mut logged, None);
                        }
                    }
                }
            }
        }
    }
}

fn watch_failed(metrics: &Metrics, resource: &'static str, scope: &str, err: &watcher::Error) {
    metrics.watch_error(resource);
    warn!(
        resource,
        namespace = %scope,
        error = %error_chain(err),
        "watch failed; retrying with backoff"
    );
}

/// What was logged last, so each collision and refused target is logged once when it appears.
#[derive(Debug, Default)]
struct Logged {
    collisions: BTreeSet<NameCollision>,
    refused: BTreeSet<document::RefusedTarget>,
}

/// Recomputes what changed, logs new warnings and collisions, renders, and hands the snapshot
/// to the writer.
fn publish(
    index: &mut Index,
    published: &mut Published,
    metrics: &Metrics,
    snapshots: &watch::Sender<Option<Arc<Snapshot>>>,
    logged: &mut Logged,
    first_change: Option<Instant>,
) {
    let warnings = index.refresh();
    metrics.object_warnings(warnings.len());
    for warning in &warnings {
        warn!(
            kind = warning.kind,
            object = %warning.object,
            annotation = warning.annotation.as_deref(),
            "{warning}"
        );
    }
    // Only the Services that changed, and those whose names a collision moved.
    published.update(index);
    let collisions: BTreeSet<NameCollision> = published.collisions().into_iter().collect();
    for collision in collisions.difference(&logged.collisions) {
        warn!(name = %collision.name, "service name collision: {collision}");
    }
    metrics.computed(
        published.backend_count(),
        published.computed_server_count(),
        collisions.len(),
    );
    logged.collisions = collisions;
    // The default address policy, applied per Service: an EndpointSlice can name any address,
    // and loopback or link-local ones must never reach Traefik.
    let refused = published.refused();
    for target in refused.difference(&logged.refused) {
        warn!(
            cluster = %published.cluster(),
            service = %target.backend,
            address = %target.address,
            reason = target.reason.as_str(),
            "left an endpoint out of the published document: {}", target.reason
        );
    }
    metrics.refused_targets(refused.len());
    if *refused != logged.refused {
        logged.refused = refused.clone();
    }
    match published.snapshot() {
        Ok(mut snapshot) => {
            snapshot.first_change = first_change;
            snapshots.send_replace(Some(Arc::new(snapshot)));
        }
        Err(err) => {
            metrics.render_error();
            error!(error = %error_chain(&err), "not publishing: the document is invalid");
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use ksd_shared::backend::Backend;

    use super::*;
    use crate::index::testing::{service, slice};

    fn backends(index: &mut Index) -> Vec<Backend> {
        index.refresh();
        index.backends(&NameTemplate::default()).0
    }

    fn servers(index: &mut Index) -> Vec<String> {
        backends(index)
            .iter()
            .flat_map(|b| {
                b.targets
                    .iter()
                    .map(|t| format!("{}={}", b.name, t.address()))
            })
            .collect()
    }

    const SVC: usize = 0;
    const SLICES: usize = 1;

    fn initial(sources: &mut Sources, index: &mut Index) {
        let web = service("ns", "web").port("http", 80).build();
        let s = slice("ns", "web-1", "web")
            .port("http", 80)
            .ready("10.0.0.1")
            .build();
        sources.handle(index, SVC, Update::Service(Box::new(Event::Init)));
        sources.handle(index, SVC, Update::Service(Box::new(Event::InitApply(web))));
        sources.handle(index, SLICES, Update::Slice(Box::new(Event::Init)));
        sources.handle(index, SLICES, Update::Slice(Box::new(Event::InitApply(s))));
        assert!(!sources.all_synced());
        sources.handle(index, SVC, Update::Service(Box::new(Event::InitDone)));
        assert!(!sources.all_synced(), "slices still listing");
        let h = sources.handle(index, SLICES, Update::Slice(Box::new(Event::InitDone)));
        assert!(h.listed && !h.restarted);
        assert!(sources.all_synced());
    }

    #[test]
    fn layout_has_one_watcher_per_resource_and_namespace() {
        assert_eq!(
            Sources::layout(&[]),
            vec![(Resource::Services, None), (Resource::EndpointSlices, None)]
        );
        let layout = Sources::layout(&["a".to_owned(), "b".to_owned()]);
        assert_eq!(layout.len(), 4);
        assert_eq!(layout[1], (Resource::Services, Some("b".to_owned())));
        assert_eq!(layout[2], (Resource::EndpointSlices, Some("a".to_owned())));
    }

    #[test]
    fn nothing_is_indexed_before_a_list_completes() {
        let mut sources = Sources::new(&[]);
        let mut index = Index::new();
        sources.handle(&mut index, SVC, Update::Service(Box::new(Event::Init)));
        sources.handle(
            &mut index,
            SVC,
            Update::Service(Box::new(Event::InitApply(
                service("ns", "web").port("http", 80).build(),
            ))),
        );
        assert!(backends(&mut index).is_empty());
        initial(&mut sources, &mut index);
        assert_eq!(servers(&mut index), ["ns-web-http=10.0.0.1:80"]);
    }

    #[test]
    fn a_relist_keeps_the_previous_state_until_it_completes() {
        let mut sources = Sources::new(&[]);
        let mut index = Index::new();
        initial(&mut sources, &mut index);

        // A re-list of slices starts (410 Gone): the index keeps the old slices meanwhile.
        let h = sources.handle(&mut index, SLICES, Update::Slice(Box::new(Event::Init)));
        assert!(h.restarted);
        assert_eq!(servers(&mut index), ["ns-web-http=10.0.0.1:80"]);
        let s2 = slice("ns", "web-2", "web")
            .port("http", 80)
            .ready("10.0.0.2")
            .build();
        let h = sources.handle(
            &mut index,
            SLICES,
            Update::Slice(Box::new(Event::InitApply(s2))),
        );
        assert!(!h.changed);
        assert_eq!(servers(&mut index), ["ns-web-http=10.0.0.1:80"]);

        // A failed list starts over: the half-read buffer is dropped.
        sources.handle(&mut index, SLICES, Update::Slice(Box::new(Event::Init)));
        let s3 = slice("ns", "web-3", "web")
            .port("http", 80)
            .ready("10.0.0.3")
            .build();
        sources.handle(
            &mut index,
            SLICES,
            Update::Slice(Box::new(Event::InitApply(s3))),
        );
        let h = sources.handle(&mut index, SLICES, Update::Slice(Box::new(Event::InitDone)));
        assert!(h.changed);
        // Swapped at InitDone: web-1 (not in the new list) is gone, web-2 was never complete.
        assert_eq!(servers(&mut index), ["ns-web-http=10.0.0.3:80"]);
    }

    #[test]
    fn an_identical_relist_changes_nothing() {
        let mut sources = Sources::new(&[]);
        let mut index = Index::new();
        initial(&mut sources, &mut index);
        index.refresh();
        let h = sources.handle(&mut index, SVC, Update::Service(Box::new(Event::Init)));
        assert!(h.restarted);
        sources.handle(
            &mut index,
            SVC,
            Update::Service(Box::new(Event::InitApply(
                service("ns", "web").port("http", 80).build(),
            ))),
        );
        let h = sources.handle(&mut index, SVC, Update::Service(Box::new(Event::InitDone)));
        assert!(h.listed && !h.changed);
    }

    #[test]
    fn an_empty_relist_of_one_namespace_leaves_the_others() {
        let namespaces = ["a".to_owned(), "b".to_owned()];
        let mut sources = Sources::new(&namespaces);
        let mut index = Index::new();
        // ids: 0 services/a, 1 services/b, 2 slices/a, 3 slices/b
        for (id, ns) in [(0, "a"), (1, "b")] {
            sources.handle(&mut index, id, Update::Service(Box::new(Event::Init)));
            sources.handle(
                &mut index,
                id,
                Update::Service(Box::new(Event::InitApply(
                    service(ns, "web").port("http", 80).build(),
                ))),
            );
            sources.handle(&mut index, id, Update::Service(Box::new(Event::InitDone)));
        }
        for id in [2, 3] {
            sources.handle(&mut index, id, Update::Slice(Box::new(Event::Init)));
            sources.handle(&mut index, id, Update::Slice(Box::new(Event::InitDone)));
        }
        assert!(sources.all_synced());
        assert_eq!(backends(&mut index).len(), 2);

        sources.handle(&mut index, 0, Update::Service(Box::new(Event::Init)));
        sources.handle(&mut index, 0, Update::Service(Box::new(Event::InitDone)));
        let names: Vec<String> = backends(&mut index).into_iter().map(|b| b.name).collect();
        assert_eq!(names, ["b-web-http"]);
    }

    #[test]
    fn apply_and_delete_events() {
        let mut sources = Sources::new(&[]);
        let mut index = Index::new();
        initial(&mut sources, &mut index);
        let s2 = slice("ns", "web-2", "web")
            .port("http", 80)
            .ready("10.0.0.2")
            .build();
        let h = sources.handle(
            &mut index,
            SLICES,
            Update::Slice(Box::new(Event::Apply(s2.clone()))),
        );
        assert!(h.changed);
        assert_eq!(
            servers(&mut index),
            ["ns-web-http=10.0.0.1:80", "ns-web-http=10.0.0.2:80"]
        );
        sources.handle(
            &mut index,
            SLICES,
            Update::Slice(Box::new(Event::Delete(s2))),
        );
        assert_eq!(servers(&mut index), ["ns-web-http=10.0.0.1:80"]);
        let web = service("ns", "web").port("http", 80).build();
        let h = sources.handle(
            &mut index,
            SVC,
            Update::Service(Box::new(Event::Delete(web))),
        );
        assert!(h.changed);
        assert!(backends(&mut index).is_empty());
    }
}
