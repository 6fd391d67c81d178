{
  description = "kettle test flake without inputs, hence without flake.lock";
  outputs = { self }: let
    system = "x86_64-linux";
    hello = derivation {
      name = "kettle-noinputs-1.0";
      inherit system;
      builder = "/bin/sh";
      args = [ "-c" ''
        /bin/mkdir -p $out/bin
        printf '#!/bin/sh\necho "Hello from a flake without inputs"\n' > $out/bin/kettle-noinputs
        /bin/chmod 755 $out/bin/kettle-noinputs
      '' ];
    };
  in {
    packages.${system}.default = hello;
  };
}
