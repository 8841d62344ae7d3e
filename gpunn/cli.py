def main():
    raise SystemExit("gpunn: the command line is not built yet")
