"""What a person touches: the command line, MP4 export and the browser viewer."""
