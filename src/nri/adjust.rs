//! NRI container adjustments: merging the plugins' answers in plugin order, with each field
//! (or entry: an annotation key, a mount destination, an env name…) owned by the first plugin
//! that sets it and a second claim refused as NRI does; applying the merged result to the OCI
//! spec; and describing a container's spec to plugins.
//!
//! The spec is edited as its JSON tree (the OCI field names are the contract; oci-spec's typed
//! setters would add nothing here). Kinds of adjustment ferrio does not apply yet are refused
//! by name rather than dropped: a plugin's device or seccomp change silently ignored would be
//! worse than a failed create.

use super::api;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// The merged adjustment of a container and who set what.
#[derive(Debug, Default)]
pub struct Merged {
    pub adjust: api::ContainerAdjustment,
    /// (field, key) → the plugin that set it.
    owners: HashMap<(&'static str, String), String>,
    /// The plugins that added OCI hooks, in order.
    hook_owners: Vec<String>,
}

impl Merged {
    /// Records that `plugin` sets `field` (`key` for an entry of a compound field); a field
    /// already set by any plugin is a conflict. A removal (`-key`) followed by a set of the
    /// same key by the same plugin is not.
    fn claim(&mut self, plugin: &str, field: &'static str, key: &str) -> Result<(), String> {
        let (k, removal) = match key.strip_prefix('-') {
            Some(k) => (k.to_string(), true),
            None => (key.to_string(), false),
        };
        let mark = if removal {
            format!("-{plugin}")
        } else {
            plugin.to_string()
        };
        match self.owners.get(&(field, k.clone())) {
            Some(owner) if owner == &format!("-{plugin}") && !removal => {}
            Some(owner) => {
                let owner = owner.trim_start_matches('-');
                let key = if k.is_empty() {
                    String::new()
                } else {
                    format!(" {k}")
                };
                return Err(format!(
                    "plugins {plugin:?} and {owner:?} both tried to set {field}{key}"
                ));
            }
            None => {}
        }
        self.owners.insert((field, k), mark);
        Ok(())
    }

    /// Merges a map-valued field (`Annotations`, `Sysctl`): each key claimed (a `-key` removes
    /// it from what the next plugin is shown, `theirs`), and added to `ours`, which is returned.
    fn merge_map(
        &mut self,
        plugin: &str,
        field: &'static str,
        entries: HashMap<String, String>,
        theirs: &mut HashMap<String, String>,
        mut ours: HashMap<String, String>,
    ) -> Result<HashMap<String, String>, String> {
        let mut keys: Vec<_> = entries.into_iter().collect();
        keys.sort();
        for (k, v) in keys {
            self.claim(plugin, field, &k)?;
            match k.strip_prefix('-') {
                Some(name) => {
                    theirs.remove(name);
                }
                None => {
                    theirs.insert(k.clone(), v.clone());
                }
            }
            ours.insert(k, v);
        }
        Ok(ours)
    }

    /// Adds `plugin`'s adjustment, and updates `ctr` (what the next plugin is shown) to match.
    pub fn add(
        &mut self,
        plugin: &str,
        a: api::ContainerAdjustment,
        ctr: &mut api::Container,
    ) -> Result<(), String> {
        refuse_unsupported(&a)?;
        let ours = std::mem::take(&mut self.adjust.annotations);
        self.adjust.annotations = self.merge_map(
            plugin,
            "Annotations",
            a.annotations,
            &mut ctr.annotations,
            ours,
        )?;
        for m in a.mounts {
            self.claim(plugin, "Mounts", &m.destination)?;
            match m.destination.strip_prefix('-') {
                Some(d) => ctr.mounts.retain(|x| x.destination != d),
                None => {
                    ctr.mounts.retain(|x| x.destination != m.destination);
                    ctr.mounts.push(m.clone());
                }
            }
            self.adjust.mounts.push(m);
        }
        for kv in a.env {
            self.claim(plugin, "Env", &kv.key)?;
            let name = kv.key.trim_start_matches('-');
            ctr.env
                .retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != name);
            if !kv.key.starts_with('-') {
                ctr.env.push(format!("{}={}", kv.key, kv.value));
            }
            self.adjust.env.push(kv);
        }
        if !a.args.is_empty() {
            let args = match a.args.split_first() {
                Some((first, rest)) if first.is_empty() => rest.to_vec(),
                _ => a.args.clone(),
            };
            // `args[0] == ""` clears an earlier owner before setting.
            if a.args.first().is_some_and(|f| f.is_empty()) {
                self.owners.remove(&("Args", String::new()));
            }
            self.claim(plugin, "Args", "")?;
            ctr.args = args.clone();
            self.adjust.args = args;
        }
        if let Some(h) = a.hooks {
            // Hooks add up; they are never a conflict.
            self.hook_owners.push(plugin.to_string());
            let ours = self.adjust.hooks.get_or_insert_with(Default::default);
            let theirs = ctr.hooks.get_or_insert_with(Default::default);
            for (dst, dst2, src) in [
                (&mut ours.prestart, &mut theirs.prestart, h.prestart),
                (
                    &mut ours.create_runtime,
                    &mut theirs.create_runtime,
                    h.create_runtime,
                ),
                (
                    &mut ours.create_container,
                    &mut theirs.create_container,
                    h.create_container,
                ),
                (
                    &mut ours.start_container,
                    &mut theirs.start_container,
                    h.start_container,
                ),
                (&mut ours.poststart, &mut theirs.poststart, h.poststart),
                (&mut ours.poststop, &mut theirs.poststop, h.poststop),
            ] {
                dst.extend(src.iter().cloned());
                dst2.extend(src);
            }
        }
        for d in a.cdi_devices {
            self.claim(plugin, "CdiDevices", &d.name)?;
            if !ctr.cdi_devices.iter().any(|x| x.name == d.name) {
                ctr.cdi_devices.push(d.clone());
            }
            if !self.adjust.cdi_devices.iter().any(|x| x.name == d.name) {
                self.adjust.cdi_devices.push(d);
            }
        }
        for r in a.rlimits {
            self.claim(plugin, "Rlimits", &r.r#type)?;
            ctr.rlimits.retain(|x| x.r#type != r.r#type);
            ctr.rlimits.push(r.clone());
            self.adjust.rlimits.push(r);
        }
        if let Some(l) = a.linux {
            if let Some(o) = l.oom_score_adj {
                self.claim(plugin, "OomScoreAdj", "")?;
                let ours = self.adjust.linux.get_or_insert_with(Default::default);
                ours.oom_score_adj = Some(o);
                ctr.linux.get_or_insert_with(Default::default).oom_score_adj = Some(o);
            }
            if let Some(r) = l.resources {
                self.add_resources(plugin, r, ctr)?;
            }
            let theirs = ctr.linux.get_or_insert_with(Default::default);
            let ours = std::mem::take(
                &mut self
                    .adjust
                    .linux
                    .get_or_insert_with(Default::default)
                    .sysctl,
            );
            let merged = self.merge_map(plugin, "Sysctl", l.sysctl, &mut theirs.sysctl, ours)?;
            self.adjust
                .linux
                .get_or_insert_with(Default::default)
                .sysctl = merged;
            for n in l.namespaces {
                self.claim(plugin, "Namespace", &n.r#type)?;
                let t = n.r#type.trim_start_matches('-');
                theirs.namespaces.retain(|x| x.r#type != t);
                if !n.r#type.starts_with('-') {
                    theirs.namespaces.push(n.clone());
                }
                let ours = self.adjust.linux.get_or_insert_with(Default::default);
                ours.namespaces.push(n);
            }
            for d in l.devices {
                self.claim(plugin, "Devices", &d.path)?;
                let p = d.path.trim_start_matches('-');
                theirs.devices.retain(|x| x.path != p);
                if !d.path.starts_with('-') {
                    theirs.devices.push(d.clone());
                }
                let ours = self.adjust.linux.get_or_insert_with(Default::default);
                ours.devices.push(d);
            }
            if let Some(io) = l.io_priority {
                self.claim(plugin, "IoPriority", "")?;
                theirs.io_priority = Some(io);
                let ours = self.adjust.linux.get_or_insert_with(Default::default);
                ours.io_priority = Some(io);
            }
            if let Some(sc) = l.scheduler {
                self.claim(plugin, "LinuxSched", "")?;
                theirs.scheduler = Some(sc.clone());
                let ours = self.adjust.linux.get_or_insert_with(Default::default);
                ours.scheduler = Some(sc);
            }
            if !l.cgroups_path.is_empty() {
                // Checked and applied by the engine, which keeps the container's cgroup.
                self.claim(plugin, "CgroupsPath", "")?;
                theirs.cgroups_path = l.cgroups_path.clone();
                let ours = self.adjust.linux.get_or_insert_with(Default::default);
                ours.cgroups_path = l.cgroups_path;
            }
            if let Some(sp) = l.seccomp_policy {
                self.claim(plugin, "SeccompPolicy", "")?;
                theirs.seccomp_policy = Some(sp.clone());
                let ours = self.adjust.linux.get_or_insert_with(Default::default);
                ours.seccomp_policy = Some(sp);
            }
        }
        Ok(())
    }

    pub(crate) fn add_resources(
        &mut self,
        plugin: &str,
        r: api::LinuxResources,
        ctr: &mut api::Container,
    ) -> Result<(), String> {
        let mut ours = self
            .adjust
            .linux
            .get_or_insert_with(Default::default)
            .resources
            .take()
            .unwrap_or_default();
        let theirs = ctr
            .linux
            .get_or_insert_with(Default::default)
            .resources
            .get_or_insert_with(Default::default);
        // One optional value of `src`: claimed, then set in ours (`o`) and theirs (`t`).
        macro_rules! take {
            ($src:expr, $o:expr, $t:expr, $f:ident, $name:literal) => {
                if let Some(v) = $src.$f {
                    self.claim(plugin, $name, "")?;
                    $o.$f = Some(v.clone());
                    $t.$f = Some(v);
                }
            };
        }
        if let Some(m) = r.memory {
            let o = ours.memory.get_or_insert_with(Default::default);
            let t = theirs.memory.get_or_insert_with(Default::default);
            take!(m, o, t, limit, "MemLimit");
            take!(m, o, t, reservation, "MemReservation");
            take!(m, o, t, swap, "MemSwapLimit");
            take!(m, o, t, kernel, "MemKernelLimit");
            take!(m, o, t, kernel_tcp, "MemTCPLimit");
            take!(m, o, t, swappiness, "MemSwappiness");
            take!(m, o, t, disable_oom_killer, "MemDisableOomKiller");
            take!(m, o, t, use_hierarchy, "MemUseHierarchy");
        }
        if let Some(c) = r.cpu {
            let o = ours.cpu.get_or_insert_with(Default::default);
            let t = theirs.cpu.get_or_insert_with(Default::default);
            take!(c, o, t, shares, "CPUShares");
            take!(c, o, t, quota, "CPUQuota");
            take!(c, o, t, period, "CPUPeriod");
            take!(c, o, t, realtime_runtime, "CPURealtimeRuntime");
            take!(c, o, t, realtime_period, "CPURealtimePeriod");
            if !c.cpus.is_empty() {
                self.claim(plugin, "CPUSetCPUs", "")?;
                o.cpus = c.cpus.clone();
                t.cpus = c.cpus;
            }
            if !c.mems.is_empty() {
                self.claim(plugin, "CPUSetMems", "")?;
                o.mems = c.mems.clone();
                t.mems = c.mems;
            }
        }
        // Classes: applied by the engine (`Engine::nri_adjust`), which knows the host's.
        take!(r, ours, theirs, blockio_class, "BlockioClass");
        take!(r, ours, theirs, rdt_class, "RdtClass");
        if let Some(p) = r.pids {
            self.claim(plugin, "PidsLimit", "")?;
            ours.pids = Some(p);
            theirs.pids = Some(p);
        }
        // Device cgroup rules add up, as in NRI (no owner).
        theirs.devices.extend(r.devices.iter().cloned());
        ours.devices.extend(r.devices);
        for h in r.hugepage_limits {
            self.claim(plugin, "HugepageLimits", &h.page_size)?;
            theirs
                .hugepage_limits
                .retain(|x| x.page_size != h.page_size);
            theirs.hugepage_limits.push(h.clone());
            ours.hugepage_limits.push(h);
        }
        let mut unified: Vec<_> = r.unified.into_iter().collect();
        unified.sort();
        for (k, v) in unified {
            self.claim(plugin, "CgroupsUnified", &k)?;
            theirs.unified.insert(k.clone(), v.clone());
            ours.unified.insert(k, v);
        }
        self.adjust
            .linux
            .get_or_insert_with(Default::default)
            .resources = Some(ours);
        Ok(())
    }
}

impl Merged {
    /// Who set what, as NRI's validators are shown it (container ID → field owners).
    pub fn owners(&self, container_id: &str) -> api::OwningPlugins {
        let mut fo = api::FieldOwners::default();
        for ((field, key), owner) in &self.owners {
            let Some(f) = api::Field::from_str_name(field) else {
                continue;
            };
            if key.is_empty() {
                fo.simple.insert(f as i32, owner.clone());
            } else {
                fo.compound
                    .entry(f as i32)
                    .or_default()
                    .owners
                    .insert(key.clone(), owner.clone());
            }
        }
        if !self.hook_owners.is_empty() {
            fo.simple
                .insert(api::Field::OciHooks as i32, self.hook_owners.join(","));
        }
        api::OwningPlugins {
            owners: [(container_id.to_string(), fo)].into(),
        }
    }

    /// The plugins that added OCI hooks.
    pub fn hook_owners(&self) -> &[String] {
        &self.hook_owners
    }

    /// The plugins that set any entry of `field` (a Field name, e.g. "Sysctl").
    pub fn field_owners(&self, field: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .owners
            .iter()
            .filter(|((f, _), _)| *f == field)
            .map(|(_, o)| o.trim_start_matches('-').to_string())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// `b`'s set fields over `a`.
pub fn overlay_resources(a: &mut api::LinuxResources, b: &api::LinuxResources) {
    if let Some(m) = &b.memory {
        let am = a.memory.get_or_insert_with(Default::default);
        macro_rules! over {
            ($($f:ident),*) => { $( if m.$f.is_some() { am.$f = m.$f.clone(); } )* };
        }
        over!(
            limit,
            reservation,
            swap,
            kernel,
            kernel_tcp,
            swappiness,
            disable_oom_killer,
            use_hierarchy
        );
    }
    if let Some(c) = &b.cpu {
        let ac = a.cpu.get_or_insert_with(Default::default);
        macro_rules! over {
            ($($f:ident),*) => { $( if c.$f.is_some() { ac.$f = c.$f.clone(); } )* };
        }
        over!(shares, quota, period, realtime_runtime, realtime_period);
        if !c.cpus.is_empty() {
            ac.cpus = c.cpus.clone();
        }
        if !c.mems.is_empty() {
            ac.mems = c.mems.clone();
        }
    }
    if b.pids.is_some() {
        a.pids = b.pids;
    }
    for h in &b.hugepage_limits {
        a.hugepage_limits.retain(|x| x.page_size != h.page_size);
        a.hugepage_limits.push(h.clone());
    }
    for (k, v) in &b.unified {
        a.unified.insert(k.clone(), v.clone());
    }
}

/// Refuses the kinds of adjustment ferrio does not apply yet, by name.
fn refuse_unsupported(a: &api::ContainerAdjustment) -> Result<(), String> {
    let mut unsupported = Vec::new();
    if let Some(l) = &a.linux {
        for (set, name) in [
            (!l.net_devices.is_empty(), "network devices"),
            (l.rdt.is_some(), "RDT"),
            (l.memory_policy.is_some(), "the memory policy"),
        ] {
            if set {
                unsupported.push(name);
            }
        }
    }
    if !unsupported.is_empty() {
        return Err(format!(
            "adjustments of {} are not supported by ferrio yet",
            unsupported.join(", ")
        ));
    }
    Ok(())
}

fn obj<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = json!({});
    }
    match v.get_mut(key).and_then(Value::as_object_mut) {
        Some(m) => m,
        None => unreachable!("set to an object just above"),
    }
}

fn arr<'a>(v: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    if !v.get(key).is_some_and(Value::is_array) {
        v[key] = json!([]);
    }
    match v.get_mut(key).and_then(Value::as_array_mut) {
        Some(a) => a,
        None => unreachable!("set to an array just above"),
    }
}

/// Applies a merged adjustment to a spec's JSON tree; `min_oom_score_adj` is the lowest OOM
/// score adjustment this host lets ferrio set (a lower one is raised to it).
pub fn apply(spec: &mut Value, a: &api::ContainerAdjustment, min_oom_score_adj: i64) {
    for (k, v) in &a.annotations {
        let ann = obj(spec, "annotations");
        match k.strip_prefix('-') {
            Some(name) => {
                ann.remove(name);
            }
            None => {
                ann.insert(k.clone(), Value::String(v.clone()));
            }
        }
    }
    for m in &a.mounts {
        let mounts = arr(spec, "mounts");
        let dest = m.destination.trim_start_matches('-');
        mounts.retain(|x| x.get("destination").and_then(Value::as_str) != Some(dest));
        if !m.destination.starts_with('-') {
            mounts.push(json!({
                "destination": m.destination,
                "type": m.r#type,
                "source": m.source,
                "options": m.options,
            }));
        }
    }
    let process = obj(spec, "process");
    let mut process = Value::Object(std::mem::take(process));
    for kv in &a.env {
        let name = kv.key.trim_start_matches('-');
        let env = arr(&mut process, "env");
        env.retain(|e| {
            e.as_str()
                .map(|s| s.split_once('=').map_or(s, |(k, _)| k) != name)
                .unwrap_or(true)
        });
        if !kv.key.starts_with('-') {
            env.push(Value::String(format!("{}={}", kv.key, kv.value)));
        }
    }
    if !a.args.is_empty() {
        process["args"] = json!(a.args);
    }
    for r in &a.rlimits {
        let rl = arr(&mut process, "rlimits");
        rl.retain(|x| x.get("type").and_then(Value::as_str) != Some(r.r#type.as_str()));
        rl.push(json!({"type": r.r#type, "hard": r.hard, "soft": r.soft}));
    }
    if let Some(o) = a.linux.as_ref().and_then(|l| l.oom_score_adj.as_ref()) {
        process["oomScoreAdj"] = json!(o.value.clamp(min_oom_score_adj, 1000));
    }
    spec["process"] = process;
    if let Some(h) = &a.hooks {
        let hooks = obj(spec, "hooks");
        let mut hooks = Value::Object(std::mem::take(hooks));
        for (name, list) in [
            ("prestart", &h.prestart),
            ("createRuntime", &h.create_runtime),
            ("createContainer", &h.create_container),
            ("startContainer", &h.start_container),
            ("poststart", &h.poststart),
            ("poststop", &h.poststop),
        ] {
            for hook in list {
                let mut j = json!({"path": hook.path});
                if !hook.args.is_empty() {
                    j["args"] = json!(hook.args);
                }
                if !hook.env.is_empty() {
                    j["env"] = json!(hook.env);
                }
                if let Some(t) = &hook.timeout {
                    j["timeout"] = json!(t.value);
                }
                arr(&mut hooks, name).push(j);
            }
        }
        spec["hooks"] = hooks;
    }
    if let Some(r) = a.linux.as_ref().and_then(|l| l.resources.as_ref()) {
        let linux = obj(spec, "linux");
        let mut linux = Value::Object(std::mem::take(linux));
        let res = obj(&mut linux, "resources");
        let mut res = Value::Object(std::mem::take(res));
        if let Some(m) = &r.memory {
            let mem = obj(&mut res, "memory");
            let put = |mem: &mut Map<String, Value>, k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    mem.insert(k.into(), v);
                }
            };
            put(mem, "limit", m.limit.as_ref().map(|v| json!(v.value)));
            put(
                mem,
                "reservation",
                m.reservation.as_ref().map(|v| json!(v.value)),
            );
            put(mem, "swap", m.swap.as_ref().map(|v| json!(v.value)));
            put(mem, "kernel", m.kernel.as_ref().map(|v| json!(v.value)));
            put(
                mem,
                "kernelTCP",
                m.kernel_tcp.as_ref().map(|v| json!(v.value)),
            );
            put(
                mem,
                "swappiness",
                m.swappiness.as_ref().map(|v| json!(v.value)),
            );
            put(
                mem,
                "disableOOMKiller",
                m.disable_oom_killer.as_ref().map(|v| json!(v.value)),
            );
            put(
                mem,
                "useHierarchy",
                m.use_hierarchy.as_ref().map(|v| json!(v.value)),
            );
        }
        if let Some(c) = &r.cpu {
            let cpu = obj(&mut res, "cpu");
            if let Some(v) = &c.shares {
                cpu.insert("shares".into(), json!(v.value));
            }
            if let Some(v) = &c.quota {
                cpu.insert("quota".into(), json!(v.value));
            }
            if let Some(v) = &c.period {
                cpu.insert("period".into(), json!(v.value));
            }
            if let Some(v) = &c.realtime_runtime {
                cpu.insert("realtimeRuntime".into(), json!(v.value));
            }
            if let Some(v) = &c.realtime_period {
                cpu.insert("realtimePeriod".into(), json!(v.value));
            }
            if !c.cpus.is_empty() {
                cpu.insert("cpus".into(), json!(c.cpus));
            }
            if !c.mems.is_empty() {
                cpu.insert("mems".into(), json!(c.mems));
            }
        }
        if let Some(p) = &r.pids {
            res["pids"] = json!({"limit": p.limit});
        }
        for d in &r.devices {
            let mut j = json!({"allow": d.allow, "access": d.access});
            if !d.r#type.is_empty() {
                j["type"] = json!(d.r#type);
            }
            if let Some(m) = &d.major {
                j["major"] = json!(m.value);
            }
            if let Some(m) = &d.minor {
                j["minor"] = json!(m.value);
            }
            arr(&mut res, "devices").push(j);
        }
        for h in &r.hugepage_limits {
            let list = arr(&mut res, "hugepageLimits");
            list.retain(|x| x.get("pageSize").and_then(Value::as_str) != Some(&h.page_size));
            list.push(json!({"pageSize": h.page_size, "limit": h.limit}));
        }
        for (k, v) in &r.unified {
            obj(&mut res, "unified").insert(k.clone(), json!(v));
        }
        linux["resources"] = res;
        spec["linux"] = linux;
    }
    if let Some(l) = &a.linux {
        apply_linux(spec, l);
    }
}

/// Sysctls, namespaces, devices (with a device cgroup rule each), the seccomp policy, and the
/// process's I/O priority and scheduler.
fn apply_linux(spec: &mut Value, l: &api::LinuxContainerAdjustment) {
    if let Some(io) = &l.io_priority {
        if let Ok(class) = api::IoPrioClass::try_from(io.class) {
            if class != api::IoPrioClass::IoprioClassNone {
                spec["process"]["ioPriority"] =
                    json!({"class": class.as_str_name(), "priority": io.priority});
            }
        }
    }
    if let Some(sc) = &l.scheduler {
        if let Ok(policy) = api::LinuxSchedulerPolicy::try_from(sc.policy) {
            if policy != api::LinuxSchedulerPolicy::SchedNone {
                let flags: Vec<&str> = sc
                    .flags
                    .iter()
                    .filter_map(|f| api::LinuxSchedulerFlag::try_from(*f).ok())
                    .map(|f| f.as_str_name())
                    .collect();
                let mut j = json!({"policy": policy.as_str_name(), "nice": sc.nice, "priority": sc.priority});
                if !flags.is_empty() {
                    j["flags"] = json!(flags);
                }
                for (k, v) in [
                    ("runtime", sc.runtime),
                    ("deadline", sc.deadline),
                    ("period", sc.period),
                ] {
                    if v > 0 {
                        j[k] = json!(v);
                    }
                }
                spec["process"]["scheduler"] = j;
            }
        }
    }
    let linux = obj(spec, "linux");
    let mut linux = Value::Object(std::mem::take(linux));
    for (k, v) in &l.sysctl {
        let sysctl = obj(&mut linux, "sysctl");
        match k.strip_prefix('-') {
            Some(name) => {
                sysctl.remove(name);
            }
            None => {
                sysctl.insert(k.clone(), json!(v));
            }
        }
    }
    for n in &l.namespaces {
        let t = n.r#type.trim_start_matches('-');
        let list = arr(&mut linux, "namespaces");
        list.retain(|x| x.get("type").and_then(Value::as_str) != Some(t));
        if !n.r#type.starts_with('-') {
            let mut j = json!({"type": n.r#type});
            if !n.path.is_empty() {
                j["path"] = json!(n.path);
            }
            list.push(j);
        }
    }
    for d in &l.devices {
        let p = d.path.trim_start_matches('-');
        let list = arr(&mut linux, "devices");
        list.retain(|x| x.get("path").and_then(Value::as_str) != Some(p));
        if d.path.starts_with('-') {
            continue;
        }
        let mut j = json!({"path": d.path, "type": d.r#type, "major": d.major, "minor": d.minor});
        if let Some(m) = &d.file_mode {
            j["fileMode"] = json!(m.value);
        }
        if let Some(u) = &d.uid {
            j["uid"] = json!(u.value);
        }
        if let Some(g) = &d.gid {
            j["gid"] = json!(g.value);
        }
        list.push(j);
        // Usable in the container: a cgroup rule allowing it, as CRI devices get.
        let res = obj(&mut linux, "resources");
        let mut res = Value::Object(std::mem::take(res));
        arr(&mut res, "devices").push(json!({
            "allow": true, "type": d.r#type, "major": d.major, "minor": d.minor, "access": "rwm"
        }));
        linux["resources"] = res;
    }
    if let Some(sp) = &l.seccomp_policy {
        let mut j = json!({
            "defaultAction": sp.default_action,
            "architectures": sp.architectures,
            "flags": sp.flags,
        });
        if let Some(e) = &sp.default_errno {
            j["defaultErrnoRet"] = json!(e.value);
        }
        if !sp.listener_path.is_empty() {
            j["listenerPath"] = json!(sp.listener_path);
            j["listenerMetadata"] = json!(sp.listener_metadata);
        }
        j["syscalls"] = sp
            .syscalls
            .iter()
            .map(|sc| {
                let mut s = json!({"names": sc.names, "action": sc.action});
                if let Some(e) = &sc.errno_ret {
                    s["errnoRet"] = json!(e.value);
                }
                if !sc.args.is_empty() {
                    s["args"] = sc
                        .args
                        .iter()
                        .map(|a| {
                            json!({"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op})
                        })
                        .collect();
                }
                s
            })
            .collect();
        linux["seccomp"] = j;
    }
    spec["linux"] = linux;
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What NRI shows plugins of a container's spec: args, env, mounts, hooks, rlimits, and the
/// Linux part (namespaces, resources, OOM score, cgroups path).
pub fn describe_spec(spec: &Value, c: &mut api::Container) {
    let p = spec.get("process");
    c.args = strings(p.and_then(|p| p.get("args")));
    c.env = strings(p.and_then(|p| p.get("env")));
    c.mounts = spec
        .get("mounts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|m| api::Mount {
                    destination: m["destination"].as_str().unwrap_or_default().into(),
                    r#type: m["type"].as_str().unwrap_or_default().into(),
                    source: m["source"].as_str().unwrap_or_default().into(),
                    options: strings(m.get("options")),
                })
                .collect()
        })
        .unwrap_or_default();
    c.rlimits = p
        .and_then(|p| p.get("rlimits"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|r| api::PosixRlimit {
                    r#type: r["type"].as_str().unwrap_or_default().into(),
                    hard: r["hard"].as_u64().unwrap_or(0),
                    soft: r["soft"].as_u64().unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default();
    let hooks = |name: &str| -> Vec<api::Hook> {
        spec.get("hooks")
            .and_then(|h| h.get(name))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|h| api::Hook {
                        path: h["path"].as_str().unwrap_or_default().into(),
                        args: strings(h.get("args")),
                        env: strings(h.get("env")),
                        timeout: h["timeout"].as_i64().map(|v| api::OptionalInt { value: v }),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    c.hooks = Some(api::Hooks {
        prestart: hooks("prestart"),
        create_runtime: hooks("createRuntime"),
        create_container: hooks("createContainer"),
        start_container: hooks("startContainer"),
        poststart: hooks("poststart"),
        poststop: hooks("poststop"),
    });
    let linux = spec.get("linux");
    let res = linux.and_then(|l| l.get("resources"));
    let opt_i64 = |v: Option<&Value>| {
        v.and_then(Value::as_i64)
            .map(|value| api::OptionalInt64 { value })
    };
    let opt_u64 = |v: Option<&Value>| {
        v.and_then(Value::as_u64)
            .map(|value| api::OptionalUInt64 { value })
    };
    let mem = res.and_then(|r| r.get("memory"));
    let cpu = res.and_then(|r| r.get("cpu"));
    c.linux = Some(api::LinuxContainer {
        namespaces: linux
            .and_then(|l| l.get("namespaces"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|n| api::LinuxNamespace {
                        r#type: n["type"].as_str().unwrap_or_default().into(),
                        path: n["path"].as_str().unwrap_or_default().into(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        resources: Some(api::LinuxResources {
            memory: mem.map(|m| api::LinuxMemory {
                limit: opt_i64(m.get("limit")),
                reservation: opt_i64(m.get("reservation")),
                swap: opt_i64(m.get("swap")),
                swappiness: opt_u64(m.get("swappiness")),
                ..Default::default()
            }),
            cpu: cpu.map(|c| api::LinuxCpu {
                shares: opt_u64(c.get("shares")),
                quota: opt_i64(c.get("quota")),
                period: opt_u64(c.get("period")),
                cpus: c["cpus"].as_str().unwrap_or_default().into(),
                mems: c["mems"].as_str().unwrap_or_default().into(),
                ..Default::default()
            }),
            pids: res
                .and_then(|r| r.get("pids"))
                .and_then(|p| p["limit"].as_i64())
                .map(|limit| api::LinuxPids { limit }),
            unified: res
                .and_then(|r| r.get("unified"))
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            ..Default::default()
        }),
        oom_score_adj: p
            .and_then(|p| p.get("oomScoreAdj"))
            .and_then(Value::as_i64)
            .map(|value| api::OptionalInt { value }),
        cgroups_path: linux
            .and_then(|l| l["cgroupsPath"].as_str())
            .unwrap_or_default()
            .into(),
        sysctl: linux
            .and_then(|l| l.get("sysctl"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        devices: linux
            .and_then(|l| l.get("devices"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|d| api::LinuxDevice {
                        path: d["path"].as_str().unwrap_or_default().into(),
                        r#type: d["type"].as_str().unwrap_or_default().into(),
                        major: d["major"].as_i64().unwrap_or(0),
                        minor: d["minor"].as_i64().unwrap_or(0),
                        file_mode: d["fileMode"]
                            .as_u64()
                            .and_then(|v| u32::try_from(v).ok())
                            .map(|value| api::OptionalFileMode { value }),
                        uid: d["uid"]
                            .as_u64()
                            .and_then(|v| u32::try_from(v).ok())
                            .map(|value| api::OptionalUInt32 { value }),
                        gid: d["gid"]
                            .as_u64()
                            .and_then(|v| u32::try_from(v).ok())
                            .map(|value| api::OptionalUInt32 { value }),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        ..Default::default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str, v: &str) -> api::KeyValue {
        api::KeyValue {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn a_second_plugin_setting_the_same_entry_conflicts_and_distinct_entries_merge() {
        let mut m = Merged::default();
        let mut shown = api::Container::default();
        m.add(
            "10-a",
            api::ContainerAdjustment {
                env: vec![env("A", "1")],
                annotations: [("x".to_string(), "1".to_string())].into(),
                ..Default::default()
            },
            &mut shown,
        )
        .unwrap();
        m.add(
            "20-b",
            api::ContainerAdjustment {
                env: vec![env("B", "2")],
                ..Default::default()
            },
            &mut shown,
        )
        .unwrap();
        assert_eq!(shown.env, vec!["A=1", "B=2"]);
        let e = m
            .add(
                "30-c",
                api::ContainerAdjustment {
                    annotations: [("x".to_string(), "2".to_string())].into(),
                    ..Default::default()
                },
                &mut shown,
            )
            .unwrap_err();
        assert_eq!(
            e,
            r#"plugins "30-c" and "10-a" both tried to set Annotations x"#
        );
        let e = m
            .add(
                "30-c",
                api::ContainerAdjustment {
                    args: vec!["true".into()],
                    ..Default::default()
                },
                &mut shown,
            )
            .and_then(|()| {
                m.add(
                    "40-d",
                    api::ContainerAdjustment {
                        args: vec!["false".into()],
                        ..Default::default()
                    },
                    &mut shown,
                )
            })
            .unwrap_err();
        assert_eq!(e, r#"plugins "40-d" and "30-c" both tried to set Args"#);
    }

    #[test]
    fn a_plugin_may_remove_then_set_and_unsupported_kinds_are_refused_by_name() {
        let mut m = Merged::default();
        let mut shown = api::Container {
            env: vec!["PATH=/bin".into(), "X=old".into()],
            ..Default::default()
        };
        m.add(
            "10-a",
            api::ContainerAdjustment {
                env: vec![env("-X", ""), env("X", "new")],
                ..Default::default()
            },
            &mut shown,
        )
        .unwrap();
        assert_eq!(shown.env, vec!["PATH=/bin", "X=new"]);
        let e = m
            .add(
                "20-b",
                api::ContainerAdjustment {
                    linux: Some(api::LinuxContainerAdjustment {
                        memory_policy: Some(api::LinuxMemoryPolicy::default()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                &mut shown,
            )
            .unwrap_err();
        assert!(e.contains("the memory policy are not supported"), "{e}");
    }

    #[test]
    fn the_merged_adjustment_is_applied_to_the_spec() {
        let mut spec = json!({
            "process": {"args": ["sh"], "env": ["PATH=/bin", "GONE=1"], "oomScoreAdj": 0},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"resources": {"memory": {"limit": 100}}}
        });
        let mut m = Merged::default();
        let mut shown = api::Container::default();
        m.add(
            "10-a",
            api::ContainerAdjustment {
                env: vec![env("-GONE", ""), env("NEW", "v")],
                annotations: [("k".to_string(), "v".to_string())].into(),
                mounts: vec![api::Mount {
                    destination: "/data".into(),
                    r#type: "bind".into(),
                    source: "/srv".into(),
                    options: vec!["rbind".into()],
                }],
                rlimits: vec![api::PosixRlimit {
                    r#type: "RLIMIT_NOFILE".into(),
                    hard: 10,
                    soft: 5,
                }],
                linux: Some(api::LinuxContainerAdjustment {
                    oom_score_adj: Some(api::OptionalInt { value: -999 }),
                    resources: Some(api::LinuxResources {
                        memory: Some(api::LinuxMemory {
                            limit: Some(api::OptionalInt64 { value: 4096 }),
                            ..Default::default()
                        }),
                        pids: Some(api::LinuxPids { limit: 7 }),
                        devices: vec![api::LinuxDeviceCgroup {
                            allow: true,
                            r#type: "c".into(),
                            major: Some(api::OptionalInt64 { value: 10 }),
                            minor: Some(api::OptionalInt64 { value: 200 }),
                            access: "rw".into(),
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                hooks: Some(api::Hooks {
                    poststop: vec![api::Hook {
                        path: "/bin/true".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            },
            &mut shown,
        )
        .unwrap();
        apply(&mut spec, &m.adjust, -500);
        assert_eq!(spec["process"]["env"], json!(["PATH=/bin", "NEW=v"]));
        assert_eq!(spec["annotations"]["k"], "v");
        assert_eq!(spec["mounts"][1]["destination"], "/data");
        assert_eq!(
            spec["process"]["rlimits"],
            json!([{"type": "RLIMIT_NOFILE", "hard": 10, "soft": 5}])
        );
        // Clamped to what the host allows.
        assert_eq!(spec["process"]["oomScoreAdj"], -500);
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 4096);
        assert_eq!(spec["linux"]["resources"]["pids"]["limit"], 7);
        assert_eq!(
            spec["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rw", "type": "c", "major": 10, "minor": 200}])
        );
        assert_eq!(spec["hooks"]["poststop"][0]["path"], "/bin/true");
        // What a plugin is shown of that spec.
        let mut c = api::Container::default();
        describe_spec(&spec, &mut c);
        assert_eq!(c.env, vec!["PATH=/bin", "NEW=v"]);
        assert_eq!(c.mounts.len(), 2);
        let l = c.linux.unwrap();
        assert_eq!(l.oom_score_adj.unwrap().value, -500);
        assert_eq!(
            l.resources.unwrap().memory.unwrap().limit.unwrap().value,
            4096
        );
    }

    #[test]
    fn sysctls_namespaces_devices_and_the_seccomp_policy_reach_the_spec() {
        let mut spec = json!({
            "process": {},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/run/netns/x"}],
                      "sysctl": {"kernel.shm_rmid_forced": "1"}}
        });
        let mut m = Merged::default();
        let mut shown = api::Container::default();
        m.add(
            "10-a",
            api::ContainerAdjustment {
                linux: Some(api::LinuxContainerAdjustment {
                    sysctl: [
                        (
                            "net.ipv4.ip_unprivileged_port_start".to_string(),
                            "333".to_string(),
                        ),
                        ("-kernel.shm_rmid_forced".to_string(), String::new()),
                    ]
                    .into(),
                    namespaces: vec![api::LinuxNamespace {
                        r#type: "-pid".into(),
                        path: String::new(),
                    }],
                    devices: vec![api::LinuxDevice {
                        path: "/dev/nri-null".into(),
                        r#type: "c".into(),
                        major: 1,
                        minor: 3,
                        file_mode: Some(api::OptionalFileMode { value: 0o666 }),
                        ..Default::default()
                    }],
                    seccomp_policy: Some(api::LinuxSeccomp {
                        default_action: "SCMP_ACT_ALLOW".into(),
                        syscalls: vec![api::LinuxSyscall {
                            names: vec!["mkdir".into()],
                            action: "SCMP_ACT_ERRNO".into(),
                            errno_ret: Some(api::OptionalUInt32 { value: 1 }),
                            args: vec![],
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &mut shown,
        )
        .unwrap();
        apply(&mut spec, &m.adjust, 0);
        let l = &spec["linux"];
        assert_eq!(
            l["sysctl"],
            json!({"net.ipv4.ip_unprivileged_port_start": "333"})
        );
        assert_eq!(
            l["namespaces"],
            json!([{"type": "network", "path": "/run/netns/x"}])
        );
        assert_eq!(l["devices"][0]["path"], "/dev/nri-null");
        assert_eq!(l["devices"][0]["fileMode"], 0o666);
        assert_eq!(
            l["resources"]["devices"],
            json!([{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}])
        );
        assert_eq!(l["seccomp"]["syscalls"][0]["names"], json!(["mkdir"]));
        assert_eq!(l["seccomp"]["syscalls"][0]["errnoRet"], 1);
        // A valid OCI spec section: oci-spec parses it.
        serde_json::from_value::<oci_spec::runtime::LinuxSeccomp>(l["seccomp"].clone()).unwrap();
        assert_eq!(m.field_owners("Sysctl"), vec!["10-a"]);
        let owners = m.owners("c1");
        let fo = &owners.owners["c1"];
        assert_eq!(
            fo.compound[&(api::Field::Devices as i32)].owners["/dev/nri-null"],
            "10-a"
        );
        assert_eq!(fo.simple[&(api::Field::SeccompPolicy as i32)], "10-a");
    }
}
