//! A certificate authority made for one test (rcgen), the files of what it signs, and a TLS
//! service with its certificate: for the tests of everything in skiff that speaks TLS.

use std::path::PathBuf;

/// A certificate authority made for one test, and the files of what it signs.
pub struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub pem: String,
    pub dir: tempfile::TempDir,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &pem).unwrap();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            pem,
            dir,
        }
    }

    /// The CA's certificate file.
    pub fn file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for 127.0.0.1 and localhost, as `NAME.crt` (the certificate, then
    /// the CA's, as a chain) and `NAME.key` (PKCS#8) in the CA's folder.
    pub fn server_files(&self, name: &str) -> (PathBuf, PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_file, key_file) = (
            self.dir.path().join(format!("{name}.crt")),
            self.dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&cert_file, format!("{}{}", cert.pem(), self.pem)).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }
}

impl Ca {
    /// The upstream test service (`TestUpstream`), speaking TLS only with a certificate from
    /// this CA for 127.0.0.1 and localhost.
    pub async fn tls_service(&self, name: &str) -> super::upstream::TestUpstream {
        let (cert, key) = self.server_files(name);
        super::upstream::TestUpstream::start_tls(
            name,
            &std::fs::read_to_string(&cert).unwrap(),
            &std::fs::read_to_string(&key).unwrap(),
        )
        .await
    }
}
