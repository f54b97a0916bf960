"""Running the chat on a host: ``make cluster`` and git-push deploys."""
