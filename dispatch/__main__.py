from dispatch.app import main

main()
