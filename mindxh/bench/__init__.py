"""`mindxh bench`: mindxh against its peers, side by side, in one invocation."""
