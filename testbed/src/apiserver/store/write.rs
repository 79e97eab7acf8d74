//! Writes: create, update, patch, delete, and the test's own put and remove.

use super::admission::{
    check_type, content_differs, default_object, keep_allocated_ips, object_namespace, validate,
};
use super::*;
use crate::apiserver::patch::{self, PatchError};
use crate::apiserver::resources::{self, SERVICES};
use serde_json::{Value, json};
use std::sync::Arc;

impl Store {
    /// POST to a collection.
    pub(crate) fn create(
        &mut self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        mut object: Value,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        check_type(rt, &mut object)?;
        let namespace = object_namespace(rt, namespace, &mut object)?;
        let name = match object_name(&object) {
            Some(name) => name,
            None => {
                let prefix = object
                    .pointer("/metadata/generateName")
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| {
                        ApiError::invalid(
                            rt,
                            "",
                            "metadata.name: Required value: name or generateName is required",
                        )
                    })?;
                let name = format!("{prefix}{}", random_suffix());
                object["metadata"]["name"] = json!(name);
                name
            }
        };
        validate(rt, &name, &object)?;
        let key = key_of(rt, &namespace, &name);
        if self.objects[rt.index].contains_key(&key) {
            return Err(ApiError::already_exists(rt, &name));
        }
        self.prepare_new(rt, &mut object);
        if dry_run {
            return Ok(Arc::new(object));
        }
        if rt.namespaced {
            self.ensure_namespace(&namespace);
        }
        Ok(self.commit(rt, key, object, None))
    }

    /// PUT to an object (or its status).
    pub(crate) fn update(
        &mut self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        mut object: Value,
        target: Target,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        check_type(rt, &mut object)?;
        let namespace = object_namespace(rt, namespace, &mut object)?;
        match object_name(&object) {
            Some(body_name) if body_name != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
            Some(_) => {}
            None => object["metadata"]["name"] = json!(name),
        }
        let key = key_of(rt, &namespace, name);
        let Some(current) = self.objects[rt.index].get(&key).cloned() else {
            return Err(ApiError::not_found(rt, name));
        };
        if target != Target::Everything {
            let requested = object
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !requested.is_empty() && requested != rv_of(&current) {
                return Err(ApiError::conflict(rt, name));
            }
        }
        self.replace(rt, key, &current, object, target, dry_run)
    }

    /// Stores `object` in place of `current`, keeping what the server owns.
    fn replace(
        &mut self,
        rt: &'static ResourceType,
        key: ObjectKey,
        current: &Arc<Value>,
        mut object: Value,
        target: Target,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        if target == Target::Status {
            let status = object.get("status").cloned();
            object = (**current).clone();
            match status {
                Some(status) => object["status"] = status,
                None => {
                    if let Some(map) = object.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        } else if target == Target::Main && rt.has_status {
            match current.get("status") {
                Some(status) => object["status"] = status.clone(),
                None => {
                    if let Some(map) = object.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        }
        validate(rt, &key.name, &object)?;
        let meta = &current["metadata"];
        for field in ["uid", "creationTimestamp"] {
            if let Some(value) = meta.get(field) {
                object["metadata"][field] = value.clone();
            }
        }
        if let Some(map) = object["metadata"].as_object_mut() {
            map.remove("managedFields");
        }
        if rt.index == SERVICES {
            keep_allocated_ips(current, &mut object);
        }
        default_object(rt, &key.name, &mut object, self);
        let generation = meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
        let generation = if content_differs(current, &object) {
            generation + 1
        } else {
            generation
        };
        object["metadata"]["generation"] = json!(generation);
        set_resource_version(&mut object, self.rv);
        let mut unchanged = (**current).clone();
        set_resource_version(&mut unchanged, self.rv);
        // A write that changes nothing is not a write: same resourceVersion, no event.
        if unchanged == object {
            return Ok(current.clone());
        }
        if dry_run {
            return Ok(Arc::new(object));
        }
        Ok(self.commit(rt, key, object, Some(current.clone())))
    }

    /// PATCH an object (or its status). Returns the object and whether it was created, which
    /// only a server-side apply of a missing object does.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        &mut self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        kind: PatchKind,
        body: &Value,
        target: Target,
        dry_run: bool,
    ) -> Result<(Arc<Value>, bool), ApiError> {
        let ns = if rt.namespaced {
            namespace.unwrap_or("default")
        } else {
            ""
        };
        let key = key_of(rt, ns, name);
        let Some(current) = self.objects[rt.index].get(&key).cloned() else {
            if kind == PatchKind::Apply && target != Target::Status {
                let mut object = body.clone();
                if object_name(&object).is_none() {
                    object["metadata"]["name"] = json!(name);
                }
                return self
                    .create(rt, namespace, object, dry_run)
                    .map(|o| (o, true));
            }
            return Err(ApiError::not_found(rt, name));
        };
        let mut object = (*current).clone();
        let outcome = match kind {
            PatchKind::Merge | PatchKind::Apply => {
                patch::merge_patch(&mut object, body);
                Ok(())
            }
            PatchKind::Strategic => patch::strategic_merge_patch(&mut object, body, rt.kind),
            PatchKind::Json => patch::json_patch(&mut object, body),
        };
        outcome.map_err(|PatchError(message)| ApiError::invalid(rt, name, message))?;
        // A patch may carry a resourceVersion as a precondition (`kubectl label
        // --resource-version`, optimistic merge patches).
        let requested = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !requested.is_empty() && requested != rv_of(&current) {
            return Err(ApiError::conflict(rt, name));
        }
        check_type(rt, &mut object)?;
        if object_name(&object).as_deref() != Some(name) {
            return Err(ApiError::invalid(
                rt,
                name,
                "metadata.name: Invalid value: the name cannot be changed by a patch",
            ));
        }
        let result = self.replace(rt, key, &current, object, target, dry_run)?;
        Ok((result, false))
    }

    /// DELETE an object.
    pub(crate) fn delete(
        &mut self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let ns = if rt.namespaced {
            namespace.unwrap_or("default")
        } else {
            ""
        };
        let key = key_of(rt, ns, name);
        let Some(current) = self.objects[rt.index].get(&key).cloned() else {
            return Err(ApiError::not_found(rt, name));
        };
        let meta = &current["metadata"];
        if let Some(uid) = options.uid.as_deref().filter(|u| !u.is_empty())
            && meta.get("uid").and_then(Value::as_str) != Some(uid)
        {
            return Err(ApiError::conflict(rt, name));
        }
        if let Some(rv) = options
            .resource_version
            .as_deref()
            .filter(|r| !r.is_empty())
            && rv != rv_of(&current)
        {
            return Err(ApiError::conflict(rt, name));
        }
        if dry_run {
            return Ok(current);
        }
        self.commit_delete(rt, &key, options.propagation)
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// DELETE a collection: every object the filter selects.
    pub(crate) fn delete_collection(
        &mut self,
        filter: &Filter,
        options: &DeleteOptions,
        dry_run: bool,
    ) -> Vec<Arc<Value>> {
        let rt = filter.resource;
        let victims = self.matching(filter);
        if dry_run {
            return victims;
        }
        victims
            .iter()
            .filter_map(|object| {
                let ns = object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let name = object
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.commit_delete(rt, &key_of(rt, ns, name), options.propagation)
            })
            .collect()
    }

    /// Creates or replaces an object as a test sets it up: by kind, namespace and name,
    /// without preconditions; status is stored as given.
    pub(crate) fn put(&mut self, object: Value) -> Result<Arc<Value>, ApiError> {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let rt = resources::of_object(api_version, kind).ok_or_else(|| {
            ApiError::bad_request(format!(
                "no resource served for apiVersion {api_version:?} kind {kind:?}"
            ))
        })?;
        // A view's objects are stored as the type it shows.
        let mut object = rt.to_stored(object);
        let rt = rt.stored();
        let namespace = if rt.namespaced {
            let ns = object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or("default")
                .to_owned();
            object["metadata"]["namespace"] = json!(ns);
            Some(ns)
        } else {
            None
        };
        let name = object_name(&object)
            .ok_or_else(|| ApiError::invalid(rt, "", "metadata.name: Required value"))?;
        if let Some(map) = object["metadata"].as_object_mut() {
            map.remove("resourceVersion");
        }
        let key = key_of(rt, namespace.as_deref().unwrap_or(""), &name);
        match self.objects[rt.index].get(&key).cloned() {
            Some(current) => {
                if let Some(ns) = &namespace {
                    self.ensure_namespace(ns);
                }
                self.replace(rt, key, &current, object, Target::Everything, false)
            }
            None => self.create(rt, namespace.as_deref(), object, false),
        }
    }

    /// Deletes an object as a test does: no preconditions, cascading.
    pub(crate) fn remove(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<Value>> {
        self.commit_delete(rt, &key_of(rt, namespace, name), Propagation::Cascade)
    }

    /// Every object of a resource type, across namespaces, in storage order.
    pub(crate) fn all(&self, rt: &ResourceType) -> Vec<Arc<Value>> {
        self.objects[rt.index].values().cloned().collect()
    }

    pub(super) fn prepare_new(&mut self, rt: &ResourceType, object: &mut Value) {
        let name = object_name(object).unwrap_or_default();
        let meta = &mut object["metadata"];
        meta["uid"] = json!(random_uid());
        meta["creationTimestamp"] = json!(now_rfc3339());
        meta["generation"] = json!(1);
        if let Some(map) = meta.as_object_mut() {
            map.remove("resourceVersion");
            map.remove("managedFields");
            map.remove("deletionTimestamp");
        }
        default_object(rt, &name, object, self);
    }

    pub(super) fn allocate_ip(&mut self, family: &str) -> String {
        if family == "IPv6" {
            let n = self.next_ipv6;
            self.next_ipv6 += 1;
            format!("fd00:10:96::{n:x}")
        } else {
            // 10.96.0.0/12, skipping .0 of each /24 for readability.
            let n = self.next_ipv4;
            self.next_ipv4 += 1;
            let host = n % 254 + 1;
            let net = n / 254;
            format!("10.{}.{}.{host}", 96 + (net >> 8) % 16, net & 0xff)
        }
    }
}

fn random_uid() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex = hex::encode(bytes);
    // Shape of a version 4 UUID; nothing reads the version bits.
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// Five characters from the alphabet the real server uses for `generateName`.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}
