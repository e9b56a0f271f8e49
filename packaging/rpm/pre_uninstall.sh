# On removal (not upgrade) stop the service; its ExecStopPost removes the capture rules.
if [ "$1" -eq 0 ]; then
  systemctl disable --now vm-proxy.service >/dev/null 2>&1 || :
fi
