{
  description = "red team: a fixed-output derivation's builder is project code running with network in the fetch phase";
  outputs = { self }: let
    system = "x86_64-linux";
    src = derivation {
      name = "rt-fod4"; inherit system; builder = "/bin/sh"; stamp = "3";
      # @PORTS@: loopback ports of the test (a listener of its own and kettle's HTTP port).
      args = [ "-c" ''
        exec 2>&1
        for port in @PORTS@; do
          if /usr/bin/timeout 3 /usr/bin/bash -c "exec 3<>/dev/tcp/127.0.0.1/$port; printf 'GET /health HTTP/1.0\r\n\r\n' >&3; /usr/bin/head -c 200 <&3" > /tmp/rt-fod-reply 2>/dev/null; then
            echo "RT FOD builder reached loopback port $port: $(/usr/bin/head -1 /tmp/rt-fod-reply)"
          else
            echo "RT FOD builder: loopback port $port unreachable"
          fi
        done
        echo "RT FOD builder: /nix/var/nix/db writable: $(test -w /nix/var/nix/db/db.sqlite && echo yes)"
        /usr/bin/printf 'fixed\n' > $out
      '' ];
      outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "0c3071418e6356e614898c84ed064ca95e88551bc0811b534bdf1952ecdae534";
    };
  in {
    packages.${system}.default = derivation {
      name = "rt-fod-user"; inherit system src; builder = "/bin/sh";
      args = [ "-c" "/bin/mkdir -p $out/bin; printf '#!/bin/sh\n' > $out/bin/x; /bin/chmod 755 $out/bin/x" ];
    };
  };
}
