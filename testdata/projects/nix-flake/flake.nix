{
  description = "kettle test flake: no nixpkgs, builders are /bin/sh";
  inputs.greeting.url = "path:./greeting";
  outputs = { self, greeting }: let
    system = "x86_64-linux";
    # A fixed-output derivation, as a fetcher would make: its output is
    # pinned by hash (it writes the bytes itself, so no network is needed).
    src = derivation {
      name = "kettle-greeting-src";
      inherit system;
      builder = "/bin/sh";
      args = [ "-c" "/usr/bin/printf 'Hello from a fixed-output derivation\\n' > $out" ];
      url = "https://example.com/kettle-greeting-src.txt";
      outputHashMode = "flat";
      outputHashAlgo = "sha256";
      outputHash = "eb901a7e8531dff5e91fc15476af39d871601d72bccd4d6036b253950d2b168d";
    };
    hello = derivation {
      name = "kettle-hello-1.0";
      inherit system src;
      builder = "/bin/sh";
      args = [ "-c" ''
        /bin/mkdir -p $out/bin $out/share
        /bin/cp $src $out/share/greeting.txt
        printf '#!/bin/sh\necho "%s"\n/bin/cat %s\n' "${greeting.text}" "$out/share/greeting.txt" > $out/bin/kettle-hello
        /bin/chmod 755 $out/bin/kettle-hello
        printf 'not executable\n' > $out/bin/README
      '' ];
    };
  in {
    packages.${system}.default = hello;
    defaultPackage.${system} = hello;
  };
}
