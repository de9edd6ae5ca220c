"""Where the server keeps its state: metadata stores and blob stores."""
