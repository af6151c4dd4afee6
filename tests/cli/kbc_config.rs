//! End-to-end: configurations as Keboola users keep them (issue 14): values only Keboola's
//! stack can resolve refused up front, the state warning of a run without a configuration
//! id. Real containers with the demo component, as in [`super::job`].

use dockless_testkit::test_env;
use serde_json::{Value, json};

use super::job::{JOB_FLAGS, ORDERS_1, Root, demo_config, demo_image};

#[test]
#[ignore = "needs root and scripts/test-env"]
fn encrypted_values_and_oauth_references_are_refused_before_anything_runs() {
    let root = Root::new();
    // The image does not exist: had anything been pulled, the error would say so.
    let image = format!("{}/no-such-component:1", test_env().registry);
    for (config, path, words) in [
        (
            demo_config(json!({"db": {"#password": "KBC::ProjectSecure::eJwBAAAA"}})),
            "parameters.db.#password",
            "KBC::ProjectSecure::",
        ),
        (
            demo_config(json!({"hosts": [{"#key": "KBC::ConfigSecureKV::abc"}]})),
            "parameters.hosts[0].#key",
            "KBC::ConfigSecureKV::",
        ),
        (
            demo_config(json!({"token": "KBC::ComponentSecure::xyz"})),
            "parameters.token",
            "KBC::ComponentSecure::",
        ),
        (
            json!({"authorization": {"oauth_api": {"id": "123456", "version": 3}}}),
            "authorization.oauth_api",
            "OAuth Broker",
        ),
    ] {
        let job = root.job(&image, &config, JOB_FLAGS);
        assert_eq!(job.code, Some(1), "{}", job.stderr);
        assert_eq!(job.result["class"], "user");
        let message = job.message();
        assert!(message.contains(path), "{message}");
        assert!(message.contains(words), "{message}");
        assert_eq!(job.result["containers"], json!([]));
        assert_eq!(job.result["digest"], Value::Null);
        assert!(!root.path().join("store").exists(), "nothing may be pulled");
        assert!(
            !root.path().join("storage.db").exists(),
            "Storage untouched"
        );
    }
    let job = root.job(
        &image,
        &json!({"authorization": {"oauth_api": {"id": "1"}}}),
        JOB_FLAGS,
    );
    assert!(
        job.message()
            .contains("authorization.oauth_api.credentials"),
        "{}",
        job.message()
    );
    let job = root.job(
        &image,
        &demo_config(json!({"#db": "KBC::ProjectSecure::abc"})),
        JOB_FLAGS,
    );
    assert!(job.message().contains("plain value"), "{}", job.message());
    assert!(job.stderr.contains("parameters.#db"), "{}", job.stderr);

    // Image parameters are the component's: a cipher there is refused too.
    let params = root.path().join("image-parameters.json");
    std::fs::write(
        &params,
        json!({"#api_key": "KBC::ComponentSecure::zz"}).to_string(),
    )
    .unwrap();
    let mut flags = JOB_FLAGS.to_vec();
    flags.extend(["--image-parameters", params.to_str().unwrap()]);
    let job = root.job(&image, &demo_config(json!({})), &flags);
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert!(
        job.message().contains("image_parameters.#api_key"),
        "{}",
        job.message()
    );

    // Credentials given with the reference are used as they are: the job runs.
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let mut config = demo_config(json!({}));
    config["authorization"] =
        json!({"oauth_api": {"id": "1", "credentials": {"appKey": "k", "#data": "{}"}}});
    let job = root.job(demo_image(), &config, JOB_FLAGS);
    assert_eq!(job.code, Some(0), "{}", job.stderr);
}

#[test]
#[ignore = "needs root and scripts/test-env"]
fn a_state_left_without_a_configuration_id_is_reported_as_not_stored() {
    let root = Root::new();
    root.import(ORDERS_1, "in.c-demo.orders", false);
    let unnamed = root.job(
        demo_image(),
        &demo_config(json!({})),
        &["--component-id", "demo"],
    );
    assert_eq!(unnamed.code, Some(0), "{}", unnamed.stderr);
    assert_eq!(unnamed.result["state_stored"], false);
    let warnings = unnamed.result["warnings"].to_string();
    assert!(
        warnings.contains("out/state.json") && warnings.contains("not stored"),
        "{warnings}"
    );
    assert!(warnings.contains("--config-id"), "{warnings}");
    assert!(
        unnamed
            .stderr
            .contains("warning: the component left out/state.json"),
        "{}",
        unnamed.stderr
    );

    // No state left: nothing to say. With a configuration id: stored, no warning.
    let quiet = root.job(
        demo_image(),
        &demo_config(json!({"keep_state": false})),
        &["--component-id", "demo"],
    );
    assert_eq!(quiet.code, Some(0), "{}", quiet.stderr);
    assert!(
        !quiet.result["warnings"].to_string().contains("state"),
        "{}",
        quiet.result
    );
    let named = root.job(demo_image(), &demo_config(json!({})), JOB_FLAGS);
    assert_eq!(named.result["state_stored"], true);
    assert!(
        !named.result["warnings"].to_string().contains("state"),
        "{}",
        named.result
    );
}
