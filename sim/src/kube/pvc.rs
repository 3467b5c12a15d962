//! The PV controller's binding of pre-bound static PVs (a PV whose `claimRef` names the PVC),
//! the pvc-protection controller (`kubernetes.io/pvc-protection` holds a PVC while a pod that
//! has not completed uses it) and the pv-protection controller (`kubernetes.io/pv-protection`
//! holds a PV while it is Bound). The real apiserver's StorageObjectInUseProtection admission
//! adds both finalizers at creation; here the controllers add them on their first pass.

use k8s_openapi::api::core::v1::{PersistentVolumeClaimStatus, PersistentVolumeStatus};
use model::effect::{Kind, ObjectRef};
use model::labels::{PV_PROTECTION_FINALIZER, PVC_PROTECTION_FINALIZER};

use crate::sim::Sim;
use crate::trace;

impl Sim {
    /// Binds the PVC `key` to the PV that claims it; releases a PV whose claim is gone.
    pub(crate) fn bind_claim(&mut self, key: &ObjectRef) {
        let claimed_by = |pv: &k8s_openapi::api::core::v1::PersistentVolume| {
            pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_some_and(|c| {
                c.name.as_deref() == Some(key.name.as_str())
                    && c.namespace.as_deref().unwrap_or("default") == key.namespace
            })
        };
        let Some(pvc) = self.api.store.get(key).and_then(|o| o.as_pvc()).cloned() else {
            // The claim is gone: its PV is Released (reclaim policy Retain).
            let released: Vec<ObjectRef> = self
                .api
                .store
                .list(Kind::PersistentVolume)
                .filter(|o| o.as_pv().is_some_and(|pv| claimed_by(pv)))
                .filter(|o| o.as_pv().and_then(|pv| pv.status.as_ref()?.phase.clone()).as_deref() == Some("Bound"))
                .map(|o| o.object_ref())
                .collect();
            for pv in released {
                let _ = self.api.modify(&pv, None, |obj| {
                    let Some(pv) = obj.pv_mut() else { return false };
                    pv.status =
                        Some(PersistentVolumeStatus { phase: Some("Released".to_string()), ..Default::default() });
                    true
                });
                trace!(self, "pv-controller", pv.to_string(), "Released (its claim {key} is gone)");
            }
            return;
        };
        let phase = pvc.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        if phase == "Bound" || pvc.metadata.deletion_timestamp.is_some() {
            return;
        }
        let wanted_volume = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty());
        let candidate = match &wanted_volume {
            Some(name) => self.api.store.get_named(Kind::PersistentVolume, "", name).cloned(),
            None => self
                .api
                .store
                .list(Kind::PersistentVolume)
                .find(|o| o.as_pv().is_some_and(|pv| claimed_by(pv)))
                .cloned(),
        };
        let Some(pv_obj) = candidate else { return };
        let Some(pv) = pv_obj.as_pv() else { return };
        let pvc_uid = pvc.metadata.uid.clone().unwrap_or_default();
        let claim_ok = pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_none_or(|c| claimed_by(pv) && c.uid.as_deref().is_none_or(|uid| uid.is_empty() || uid == pvc_uid));
        if !claim_ok || pv.metadata.deletion_timestamp.is_some() {
            return;
        }
        let pv_key = pv_obj.object_ref();
        let pv_name = pv_key.name.clone();
        let capacity = pv.spec.as_ref().and_then(|s| s.capacity.clone());
        let access_modes = pv.spec.as_ref().and_then(|s| s.access_modes.clone());
        let (claim_ns, claim_name) = (key.namespace.to_string(), key.name.to_string());
        let _ = self.api.modify(&pv_key, None, |obj| {
            let Some(pv) = obj.pv_mut() else { return false };
            let spec = pv.spec.get_or_insert_with(Default::default);
            let claim = spec.claim_ref.get_or_insert_with(Default::default);
            claim.kind = Some("PersistentVolumeClaim".to_string());
            claim.namespace = Some(claim_ns.clone());
            claim.name = Some(claim_name.clone());
            claim.uid = Some(pvc_uid.clone());
            pv.status = Some(PersistentVolumeStatus { phase: Some("Bound".to_string()), ..Default::default() });
            true
        });
        let _ = self.api.modify(key, None, |obj| {
            let Some(pvc) = obj.pvc_mut() else { return false };
            pvc.spec.get_or_insert_with(Default::default).volume_name = Some(pv_name.to_string());
            pvc.status = Some(PersistentVolumeClaimStatus {
                phase: Some("Bound".to_string()),
                capacity,
                access_modes,
                ..Default::default()
            });
            true
        });
        trace!(self, "pv-controller", key.to_string(), "Bound to {pv_key}");
    }

    /// Keeps `kubernetes.io/pvc-protection` on the PVC while a pod uses it; releases it after.
    pub(crate) fn protect_claim(&mut self, key: &ObjectRef) {
        let users = self
            .api
            .store
            .pods_using_claim(&key.namespace, &key.name)
            .filter_map(|p| self.api.store.get(p).and_then(|o| o.as_pod()))
            .filter(|pod| !pod.is_completed())
            .count();
        self.protect(key, PVC_PROTECTION_FINALIZER, users > 0, "pvc-protection", "no pod uses the claim");
    }

    /// Keeps `kubernetes.io/pv-protection` on the PV while it is Bound; releases it after.
    pub(crate) fn protect_volume(&mut self, key: &ObjectRef) {
        let Some(obj) = self.api.store.get(key) else { return };
        let bound = obj.as_pv().and_then(|pv| pv.status.as_ref()?.phase.as_deref()) == Some("Bound");
        self.protect(key, PV_PROTECTION_FINALIZER, bound, "pv-protection", "not Bound");
    }

    /// A protection controller's pass: adds `finalizer` to a live object; removes it from one
    /// being deleted once nothing holds it (`in_use` false), tracing `why` as `actor`.
    fn protect(&mut self, key: &ObjectRef, finalizer: &str, in_use: bool, actor: &str, why: &str) {
        let Some(obj) = self.api.store.get(key) else { return };
        let has = obj.finalizers().iter().any(|f| f == finalizer);
        let deleting = obj.is_deleting();
        if !deleting && !has {
            let _ = self.api.modify(key, None, |obj| {
                obj.meta_mut().finalizers.get_or_insert_with(Vec::new).push(finalizer.to_string());
                true
            });
        } else if deleting && has && !in_use {
            trace!(self, actor, key.to_string(), "remove finalizer {finalizer}: {why}");
            let _ = self.api.modify(key, None, |obj| {
                obj.meta_mut().finalizers.get_or_insert_with(Vec::new).retain(|f| f != finalizer);
                true
            });
        }
    }
}
