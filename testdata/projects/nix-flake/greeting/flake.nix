{
  description = "kettle test input: a greeting";
  outputs = { self }: { text = "Hello from a path input"; };
}
