"""One Kedro pipeline per step of the FuseMyCell workflow, in data-flow order."""
