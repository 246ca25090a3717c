//! Bad input a bot author or an operator may give: malformed URLs and PEM. Each is refused
//! at once with a configuration error naming the input, never later at the first call.

use teloxide_retention::{RedisSentinel, RedisStore, RedisTls};

#[tokio::test]
async fn malformed_redis_urls_are_config_errors_naming_the_url_without_its_password() {
    for url in [
        "",
        "not a url",
        "http://127.0.0.1:6379",
        "redis://",
        "redis://127.0.0.1:99999",
        "redis+unix://",
    ] {
        let err = RedisStore::open(url).await.unwrap_err();
        assert!(err.is_config(), "{url:?}: {err:?}");
        let text = err.to_string();
        assert!(text.contains(&format!("Redis URL {url:?} is invalid")), "{text}");
        assert!(text.contains("redis://[user:password@]host"), "says what is expected: {text}");
        let err = RedisStore::connect(url).await.unwrap_err();
        assert!(err.is_config(), "{url:?}: {err:?}");
    }
    let err = RedisStore::open("redis://:s3cret@127.0.0.1:99999/").await.unwrap_err();
    assert!(err.is_config(), "{err:?}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
    assert!(err.to_string().contains("<credentials>@127.0.0.1:99999"), "{err}");

    let err = RedisStore::open_cluster(Vec::<String>::new()).await.unwrap_err();
    assert!(err.is_config() && err.to_string().contains("Cluster nodes"), "{err}");
    let err = RedisStore::open_cluster(["not a url"]).await.unwrap_err();
    assert!(err.is_config() && err.to_string().contains("Cluster nodes"), "{err}");
    let err =
        RedisStore::open_sentinel(&RedisSentinel::new("m", ["redis://:pw@:1:2"])).unwrap_err();
    assert!(err.is_config() && !err.to_string().contains("pw"), "{err}");
}

#[tokio::test]
async fn malformed_pem_is_a_config_error_naming_the_setting() {
    let certs = crate::common::certs::TestCerts::generate();
    let cases = [
        (RedisTls::new().ca_pem(b"garbage".to_vec()), "RedisTls::ca_pem holds no PEM certificate"),
        (
            RedisTls::new().ca_pem(
                b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".to_vec(),
            ),
            "RedisTls::ca_pem is not valid PEM",
        ),
        (
            RedisTls::new()
                .client_cert_pem(b"garbage".to_vec(), certs.client_key_pem.clone().into_bytes()),
            "the certificate of RedisTls::client_cert_pem holds no PEM certificate",
        ),
        (
            RedisTls::new()
                .client_cert_pem(certs.client_cert_pem.clone().into_bytes(), b"junk".to_vec()),
            "the key of RedisTls::client_cert_pem is not a PEM private key",
        ),
        (
            // A certificate where the key belongs.
            RedisTls::new().client_cert_pem(
                certs.client_cert_pem.clone().into_bytes(),
                certs.ca_pem.clone().into_bytes(),
            ),
            "the key of RedisTls::client_cert_pem is not a PEM private key",
        ),
    ];
    for (tls, expected) in cases {
        let err = RedisStore::open_with_tls("rediss://127.0.0.1:1/", &tls).await.unwrap_err();
        assert!(err.is_config(), "{err:?}");
        assert!(err.to_string().contains(expected), "{err} should say {expected:?}");
        let err =
            RedisStore::open_cluster_with_tls(["rediss://127.0.0.1:1/"], &tls).await.unwrap_err();
        assert!(err.is_config() && err.to_string().contains(expected), "{err}");
        let sentinel = RedisSentinel::new("m", ["redis://127.0.0.1:1"]).master_tls(tls.clone());
        let err = RedisStore::open_sentinel(&sentinel).unwrap_err();
        assert!(err.is_config() && err.to_string().contains(expected), "{err}");
    }
    // The test CA's own PEM passes (the connection itself then fails: nothing listens).
    let good = RedisTls::new().ca_pem(certs.ca_pem.clone().into_bytes()).client_cert_pem(
        certs.client_cert_pem.clone().into_bytes(),
        certs.client_key_pem.clone().into_bytes(),
    );
    RedisStore::open_with_tls("rediss://127.0.0.1:1/", &good).await.unwrap();
}
