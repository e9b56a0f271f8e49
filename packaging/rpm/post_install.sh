# The proxy's own system user (its uid is what the capture rules exempt), then systemd.
getent passwd istio-proxy >/dev/null || useradd --system --user-group --home-dir /var/lib/istio --no-create-home --shell /sbin/nologin istio-proxy
mkdir -p /var/lib/istio/envoy /etc/certs /var/run/secrets/tokens
chown istio-proxy:istio-proxy /etc/certs
systemctl daemon-reload >/dev/null 2>&1 || :
