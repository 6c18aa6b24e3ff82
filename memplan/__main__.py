from memplan.cli import run

if __name__ == "__main__":  # spawned ranks (torch.multiprocessing) import this module: run only as a program
    run()
