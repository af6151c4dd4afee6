//! in/state.json and the stored state.

use crate::{Backend, TestStorage};
use dockless_staging::{DataDir, Job, JobSpec, StateKey, Storage};
use serde_json::json;

use crate::output_mapping::run_job;
use crate::storage;

fn key() -> StateKey {
    StateKey {
        component: "keboola.test".into(),
        config: "cfg1".into(),
        row: None,
    }
}

fn staged_state(s: &TestStorage) -> String {
    let work = tempfile::tempdir().unwrap();
    let dir = DataDir::create(work.path()).unwrap();
    let mut job = Job::new(JobSpec {
        component_id: "keboola.test".into(),
        config_id: Some("cfg1".into()),
        action: "run".into(),
        ..JobSpec::default()
    })
    .unwrap();
    job.stage(s, &dir).unwrap();
    std::fs::read_to_string(dir.data().join("in/state.json")).unwrap()
}

fn state_round_trips_only_on_success_and_a_missing_file_clears_it(backend: Backend) {
    let (_d, mut s) = storage(backend);
    assert_eq!(staged_state(&s), "{}", "no state yet: an empty object");

    let (_w, r) = run_job(&mut s, json!({}), true, |out| {
        std::fs::write(out.join("state.json"), r##"{"cursor": 7, "#secret": "x"}"##).unwrap()
    });
    assert!(r.unwrap().state_stored);
    assert_eq!(
        s.state(&key()).unwrap().unwrap()["component"],
        json!({"cursor": 7, "#secret": "x"})
    );
    assert_eq!(
        staged_state(&s),
        "{\n    \"cursor\": 7,\n    \"#secret\": \"x\"\n}"
    );

    // A failed job keeps the stored state.
    let (_w, r) = run_job(&mut s, json!({}), false, |out| {
        std::fs::write(out.join("state.json"), r#"{"cursor": 99}"#).unwrap()
    });
    assert!(!r.unwrap().state_stored);
    assert_eq!(s.state(&key()).unwrap().unwrap()["component"]["cursor"], 7);

    // A successful job without out/state.json clears it; the component then reads {}.
    let (_w, r) = run_job(&mut s, json!({}), true, |_| {});
    r.unwrap();
    assert_eq!(staged_state(&s), "{}");
}

fn an_invalid_state_file_fails_the_job_as_a_user_error_and_stores_nothing(backend: Backend) {
    let (_d, mut s) = storage(backend);
    let (_w, r) = run_job(&mut s, json!({}), true, |out| {
        std::fs::write(out.join("state.json"), "{broken").unwrap()
    });
    let err = r.unwrap_err();
    assert!(
        err.is_user_error() && err.to_string().contains("state.json"),
        "{err}"
    );
    assert!(s.state(&key()).unwrap().is_none());
}

fn a_deferred_state_is_handed_back_and_stored_later_with_the_others(backend: Backend) {
    let (_d, mut s) = storage(backend);
    let work = tempfile::tempdir().unwrap();
    let dir = DataDir::create(work.path()).unwrap();
    let mut job = Job::new(JobSpec {
        component_id: "keboola.test".into(),
        config_id: Some("cfg1".into()),
        action: "run".into(),
        defer_state: true,
        ..JobSpec::default()
    })
    .unwrap();
    job.stage(&s, &dir).unwrap();
    std::fs::write(dir.data().join("out/state.json"), r#"{"cursor": 3}"#).unwrap();
    let report = job.finish(&mut s, &dir, true, None).unwrap();
    assert!(!report.state_stored);
    assert!(
        s.state(&key()).unwrap().is_none(),
        "not stored with the outputs"
    );
    let (k, state) = report.deferred_state.unwrap();
    assert_eq!(k, key());
    assert_eq!(state["component"]["cursor"], 3);
    dockless_staging::store_states(&mut s, &[(k, state)]).unwrap();
    assert_eq!(s.state(&key()).unwrap().unwrap()["component"]["cursor"], 3);
}

crate::backends!(
    state_round_trips_only_on_success_and_a_missing_file_clears_it,
    an_invalid_state_file_fails_the_job_as_a_user_error_and_stores_nothing,
    a_deferred_state_is_handed_back_and_stored_later_with_the_others,
);
